package issuerclient

import "errors"

// ErrNotJSON marks an error answer of a back-channel endpoint that is not
// the application/json body RFC 6749 §5.2 requires. Post still returns the
// Reply with it, so that a test can tell a malformed answer (a bug) from a
// missing one (a transport error).
var ErrNotJSON = errors.New("error answer is not JSON")
