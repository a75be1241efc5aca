package proxy

import "errors"

var (
	// ErrInvalidConfig wraps every configuration error New returns; the
	// message names the field.
	ErrInvalidConfig = errors.New("proxy: invalid config")

	// ErrInvalidToken is returned by Forward when the upstream answered
	// 401 with WWW-Authenticate: Bearer error="invalid_token" (RFC 6750
	// §3.1), the request can be sent again (its body is held in memory),
	// and this was the first attempt for this request. The upstream's 401
	// has been written to the response all the same: a caller that does
	// not retry returns nil and the 401 passes through; a caller that
	// refreshes the token calls Forward once more with the new bearer,
	// which replaces the 401 with the new answer; a caller whose refresh
	// fails calls DiscardResponse before writing its own error. The
	// second Forward of a request never returns ErrInvalidToken.
	ErrInvalidToken = errors.New("proxy: upstream refused the access token (invalid_token)")

	// ErrUnknownRoute means Forward was given a Route that did not come
	// from this Proxy's Match. It is a programming error; nothing has been
	// written to the response.
	ErrUnknownRoute = errors.New("proxy: route does not belong to this proxy (use the *Route that Match returned)")
)
