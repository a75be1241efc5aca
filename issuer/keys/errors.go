package keys

import "errors"

var (
	// ErrUnsupportedAlg means an algorithm this package does not handle
	// (neither a JWS alg of RFC 7518 §3.1 in the HS/RS/PS/ES families nor
	// "dir", nor a known JWE enc).
	ErrUnsupportedAlg = errors.New("keys: unsupported algorithm")
	// ErrWeakKey means a key below the size its algorithm needs: RSA under
	// 2048 bits (RFC 7518 §3.3), an HMAC secret shorter than the hash
	// output (RFC 7518 §3.2), a dir key not of the enc's exact size.
	ErrWeakKey = errors.New("keys: key too weak for its algorithm")
	// ErrKeyMismatch means a key of the wrong type for its algorithm: an EC
	// key on another curve than the alg names (RFC 7518 §3.4), an RSA key
	// for an ES alg, a public key where a private one is needed.
	ErrKeyMismatch = errors.New("keys: key does not match its algorithm")
	// ErrBadKeyFile means a key file could not be read or decoded.
	ErrBadKeyFile = errors.New("keys: bad key file")
	// ErrNoKey means no active key exists for an algorithm (or no
	// encryption key when JWE is not configured).
	ErrNoKey = errors.New("keys: no active key")
	// ErrCorruptStore means a stored key could not be decoded or the
	// stored set is inconsistent (two keys with one kid).
	ErrCorruptStore = errors.New("keys: stored key invalid")
)
