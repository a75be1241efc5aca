package redistokens

import (
	"errors"

	"github.com/bffgate/bffgate/bff/tokens"
)

// ErrLockLost means the lock expired or was taken over by another holder:
// its token is no longer the one in Redis. A holder that sees it must not
// assume it alone refreshed the session. It matches tokens.ErrLockLost,
// which is what the Manager checks for.
var ErrLockLost error = &lostError{}

type lostError struct{}

func (*lostError) Error() string {
	return "redistokens: the refresh lock is no longer held by this holder (it expired or another instance took it)"
}

func (*lostError) Is(target error) bool { return target == tokens.ErrLockLost }

// errStillHeld is the cause when a wait for the lock ends before its
// holder releases it.
var errStillHeld = errors.New("the lock is still held by another request or instance")
