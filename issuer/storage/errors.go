package storage

import (
	"errors"
	"fmt"
)

var (
	// ErrNotFound means no record exists under the key asked for.
	ErrNotFound = errors.New("storage: not found")
	// ErrExpired means the record exists but is past its expiry.
	ErrExpired = errors.New("storage: expired")
	// ErrCodeReused means an authorization code was presented a second
	// time. It is wrapped by *CodeReusedError, which names the grant.
	ErrCodeReused = errors.New("storage: authorization code already redeemed")
	// ErrUnavailable means the backend cannot be reached.
	ErrUnavailable = errors.New("storage: backend unavailable")
	// ErrAlreadyExists means a create call named a key already in use (a
	// second CreateCode or CreateLoginSession with the same key). Stores
	// refuse rather than overwrite: overwriting a redeemed code record
	// would erase the evidence that detects its replay.
	ErrAlreadyExists = errors.New("storage: already exists")
)

// CodeReusedError reports the replay of an authorization code and the
// grant its first redemption created, which the caller revokes (RFC 6749
// §4.1.2: "the authorization server SHOULD revoke ... all tokens
// previously issued based on that authorization code").
type CodeReusedError struct {
	Code AuthCode
}

func (e *CodeReusedError) Error() string {
	return fmt.Sprintf("storage: authorization code already redeemed (grant %s)", e.Code.RedeemedGrant)
}

func (e *CodeReusedError) Unwrap() error { return ErrCodeReused }
