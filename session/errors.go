package session

import "errors"

var (
	// ErrNotFound means the handle names no live session: unknown, expired,
	// ended, tampered with or undecodable. Callers treat it as "no session".
	ErrNotFound = errors.New("session: no such session")
	// ErrTooLarge means a session does not fit in the configured maximum
	// cookie size of the cookie store.
	ErrTooLarge = errors.New("session: session too large for the cookie store")
	// ErrUnavailable means the store's backend cannot be reached; callers
	// answer 503 and keep the session.
	ErrUnavailable = errors.New("session: store unavailable")
)
