package redistokens

import "errors"

var (
	// ErrLockLost means the lock expired or was taken over by another
	// holder: its token is no longer the one in Redis. A holder that sees
	// it must not assume it alone refreshed the session.
	ErrLockLost = errors.New("redistokens: the refresh lock is no longer held by this holder (it expired or another instance took it)")
)

// errStillHeld is the cause when a wait for the lock ends before its
// holder releases it.
var errStillHeld = errors.New("the lock is still held by another request or instance")
