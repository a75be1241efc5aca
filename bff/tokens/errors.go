package tokens

import "errors"

var (
	// ErrInvalidConfig wraps every configuration error New returns; the
	// message names the field.
	ErrInvalidConfig = errors.New("tokens: invalid config")

	// ErrRefreshRejected means the provider refused the refresh token
	// (invalid_grant: expired, revoked, or reused) or the session has
	// none. The session cannot continue: the caller ends it and answers
	// 401 {"error":"session_expired"}.
	ErrRefreshRejected = errors.New("tokens: the provider rejected the refresh token; the user must log in again")

	// ErrProviderUnavailable means the token endpoint could not be
	// reached, failed (5xx), or refused the gateway's client (which is a
	// configuration problem, logged as an error). The session is kept; the
	// caller answers 503 and a later request may succeed.
	ErrProviderUnavailable = errors.New("tokens: the token endpoint is unavailable; try again later")

	// ErrLockUnavailable means the refresh lock could not be taken (its
	// backend is down, or the wait outlasted the request). It matches
	// ErrProviderUnavailable too, so callers answer 503.
	ErrLockUnavailable error = &lockError{}

	// ErrLockLost is what a FencedLocker's held function returns once
	// the refresh lock is no longer the caller's: it expired while the
	// token endpoint was slow, and another instance may have taken it.
	// The Manager counts it (result "lock_lost") and saves only what does
	// not overwrite another instance's refresh; callers of Fresh never
	// see it.
	ErrLockLost = errors.New("tokens: the refresh lock expired before the refreshed tokens were saved (raise Config.LockTTL above the token endpoint's timeout)")
)

type lockError struct{}

func (*lockError) Error() string {
	return "tokens: the refresh lock is unavailable; try again later"
}

func (*lockError) Is(target error) bool { return target == ErrProviderUnavailable }
