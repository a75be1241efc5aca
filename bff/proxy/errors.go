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
)
