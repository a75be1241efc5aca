package trust_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/bffgate/bffgate/issuer/trust"
)

// A Keycloak realm trusted for token exchange: its RS256 access tokens
// carrying aud bffgate-sts are accepted, their subjects prefixed.
func ExampleNew() {
	set, err := trust.New(trust.Config{
		Issuers: []trust.Issuer{{
			Issuer:     "https://keycloak.example.com/realms/corp",
			JWKSURL:    "https://keycloak.example.com/realms/corp/protocol/openid-connect/certs",
			Algorithms: []string{"RS256"},
			Audience:   []string{"bffgate-sts"},
			Subject:    trust.Mapping{Mode: trust.MapPrefix, Prefix: "corp:"},
		}},
		HTTPClient:     &http.Client{Timeout: 5 * time.Second},
		ReservedPrefix: "client:",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(set.Trusts("https://keycloak.example.com/realms/corp"))
	_, err = set.Verify(context.Background(), "not a token")
	fmt.Println(errors.Is(err, trust.ErrMalformed))
	// Output:
	// true
	// true
}

// Configuration errors name the key.
func ExampleNew_hmac() {
	_, err := trust.New(trust.Config{Issuers: []trust.Issuer{{
		Issuer: "https://idp.example.com", JWKSURL: "https://idp.example.com/jwks",
		Audience: []string{"sts"}, Algorithms: []string{"HS256"},
	}}})
	var fe *trust.FieldError
	if errors.As(err, &fe) {
		fmt.Println(fe.Path)
	}
	// Output: trusted_issuers[0].algorithms[0]
}
