package protocol_test

import (
	"errors"
	"fmt"

	"github.com/bffgate/bffgate/issuer/protocol"
)

func ExampleError() {
	storeErr := errors.New("bolt: code record 7f3a... expired")
	err := protocol.ErrInvalidGrant.
		WithDescription("the authorization code has expired; start a new authorization request").
		WithCause(storeErr)

	pe := protocol.AsError(err)
	fmt.Println(pe.Status, pe.Code)
	fmt.Println(pe.Description)
	fmt.Println(errors.Is(err, protocol.ErrInvalidGrant))
	// Output:
	// 400 invalid_grant
	// the authorization code has expired; start a new authorization request
	// true
}

func ExampleVerifyPKCE() {
	// RFC 7636 Appendix B.
	err := protocol.VerifyPKCE("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "S256")
	fmt.Println(err)
	// Output: <nil>
}
