package demoapi

import "errors"

// Sentinel errors of token verification. The HTTP layer maps them onto RFC
// 6750 responses; callers branch with errors.Is.
var (
	// ErrNoToken: the request carries no bearer token (401 with a bare
	// challenge, RFC 6750 §3.1).
	ErrNoToken = errors.New("demoapi: no bearer token in the Authorization header")
	// ErrInvalidToken: the token is malformed, forged, for another API or
	// revoked (401 invalid_token).
	ErrInvalidToken = errors.New("demoapi: invalid access token")
	// ErrExpired: the token's exp has passed (401 invalid_token; the
	// gateway refreshes and retries).
	ErrExpired = errors.New("demoapi: access token expired")
	// ErrInsufficientScope: the token lacks the scope the API requires (403
	// insufficient_scope, RFC 6750 §3.1).
	ErrInsufficientScope = errors.New("demoapi: insufficient scope")
	// ErrUnavailable: discovery, the JWK set or the introspection endpoint
	// could not be reached (503; the token may be fine).
	ErrUnavailable = errors.New("demoapi: authorization server unavailable")
)

// Errors of the item store.
var (
	// ErrItemNotFound: no item with that id for this subject.
	ErrItemNotFound = errors.New("demoapi: item not found")
	// ErrItemLimit: the subject already has the maximum number of items.
	ErrItemLimit = errors.New("demoapi: item limit reached")
	// ErrStoreFull: the store holds items for the maximum number of
	// subjects.
	ErrStoreFull = errors.New("demoapi: item store full")
	// ErrInvalidTitle: the title is empty, too long or not plain text.
	ErrInvalidTitle = errors.New("demoapi: invalid item title")
)
