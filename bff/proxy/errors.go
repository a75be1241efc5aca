package proxy

import "errors"

var (
	// ErrInvalidConfig wraps every configuration error New returns; the
	// message names the field.
	ErrInvalidConfig = errors.New("proxy: invalid config")

	// ErrUnknownRoute means Forward was given a Route that did not come
	// from this Proxy's Match. It is a programming error; nothing has been
	// written to the response.
	ErrUnknownRoute = errors.New("proxy: route does not belong to this proxy (use the *Route that Match returned)")

	// ErrInvalidPath is matched by the *PathError that CheckPath and
	// Forward's 400 answer report for a path the proxy refuses.
	ErrInvalidPath = errors.New("proxy: request path refused")

	// errBodyTooLarge: the request body is over the route's MaxBodyBytes
	// (Forward has answered 413).
	errBodyTooLarge = errors.New("proxy: request body over the route's max_body_bytes")
)

// PathError says why a request path was refused (see CheckPath); it
// matches ErrInvalidPath. Reason is written for the client: it names the
// rule, never echoes the path.
type PathError struct{ Reason string }

func pathErr(reason string) error { return &PathError{Reason: reason} }

func (e *PathError) Error() string { return "the request path is refused: " + e.Reason }

// Is reports whether target is ErrInvalidPath.
func (e *PathError) Is(target error) bool { return target == ErrInvalidPath }
