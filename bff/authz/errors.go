package authz

import (
	"errors"
)

var (
	// ErrNotJWT: the token is not a compact JWS, so it has no claims to
	// read (an opaque access token).
	ErrNotJWT = errors.New("authz: the token is not a JWT")
	// ErrClaims: the claims are not a JSON object.
	ErrClaims = errors.New("authz: the claims are not a JSON object")
	// ErrNotBool: a CEL rule evaluated to something other than a bool.
	ErrNotBool = errors.New("authz: the rule is not a bool")
)

// FieldError is a configuration error at one key of a Policy, such as
// "allow[0].cel"; the caller prefixes the route's key.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return "authz: " + e.Path + ": " + e.Msg }

func joinErrors(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}
