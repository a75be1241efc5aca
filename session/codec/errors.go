package codec

import "errors"

var (
	// ErrMalformed means bytes are not an encoding this package made:
	// truncated, corrupt, of an unknown version, or with trailing bytes.
	ErrMalformed = errors.New("codec: malformed session encoding")
	// ErrUnknownVersion means the version byte names no encoding this
	// build knows (wrapped together with ErrMalformed).
	ErrUnknownVersion = errors.New("codec: unknown encoding version")
	// ErrTicket means a handle is not a well-formed ticket.
	ErrTicket = errors.New("codec: malformed ticket")
	// ErrSealed means a sealed record failed authentication with the
	// ticket's key (wrong key, another session's record, or tampering) or
	// is malformed.
	ErrSealed = errors.New("codec: sealed record does not open")
)
