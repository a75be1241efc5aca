package issuer

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Argon2id parameters of HashPassword: the second recommended option of
// RFC 9106 §4 (64 MiB of memory, 3 passes) with 4 lanes, a 16-byte salt
// and a 32-byte tag.
const (
	argonMemoryKiB = 64 * 1024
	argonTime      = 3
	argonThreads   = 4
	argonSaltLen   = 16
	argonKeyLen    = 32
)

// Bounds on the parameters accepted in a stored argon2id hash, so that a
// mistyped configuration cannot make every login allocate gigabytes.
const (
	maxArgonMemoryKiB = 1024 * 1024 // 1 GiB
	maxArgonTime      = 64
	maxArgonThreads   = 64
)

// errBadHash is wrapped by every PHC/bcrypt parse error.
var errBadHash = errors.New("unsupported or malformed password hash")

// HashPassword returns the argon2id hash of password in the PHC string
// format ($argon2id$v=19$m=65536,t=3,p=4$salt$tag, RFC 9106 §4 parameters),
// for the users list of the issuer configuration (`bffgate users hash`).
func HashPassword(password string) (string, error) {
	if password == "" {
		return "", errors.New("issuer: the password is empty")
	}
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("issuer: read random salt: %w", err)
	}
	tag := argon2.IDKey([]byte(password), salt, argonTime, argonMemoryKiB, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemoryKiB, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(tag)), nil
}

// passwordHash is a parsed stored hash.
type passwordHash struct {
	bcrypt []byte // the bcrypt hash, or nil for argon2id
	argon  argonParams
}

type argonParams struct {
	memory  uint32
	time    uint32
	threads uint8
	salt    []byte
	tag     []byte
}

// parsePasswordHash accepts a bcrypt hash ($2a$, $2b$, $2y$) or an argon2id
// PHC string ($argon2id$v=19$m=...,t=...,p=...$salt$tag, salt and tag in
// unpadded standard base64 as the PHC format specifies).
func parsePasswordHash(s string) (passwordHash, error) {
	switch {
	case strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"), strings.HasPrefix(s, "$2y$"):
		if _, err := bcrypt.Cost([]byte(s)); err != nil {
			return passwordHash{}, fmt.Errorf("%w: bcrypt: %v", errBadHash, err)
		}
		return passwordHash{bcrypt: []byte(s)}, nil
	case strings.HasPrefix(s, "$argon2id$"):
		p, err := parseArgon2id(s)
		if err != nil {
			return passwordHash{}, err
		}
		return passwordHash{argon: p}, nil
	case strings.HasPrefix(s, "$argon2i$"), strings.HasPrefix(s, "$argon2d$"):
		return passwordHash{}, fmt.Errorf("%w: only argon2id is accepted (RFC 9106 §4 recommends it); rehash with `bffgate users hash`", errBadHash)
	default:
		return passwordHash{}, fmt.Errorf("%w: want a bcrypt ($2a$, $2b$) or argon2id ($argon2id$) hash, e.g. from `bffgate users hash`", errBadHash)
	}
}

func parseArgon2id(s string) (argonParams, error) {
	bad := func(what string) (argonParams, error) {
		return argonParams{}, fmt.Errorf("%w: argon2id: %s", errBadHash, what)
	}
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, tag
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return bad("want $argon2id$v=19$m=M,t=T,p=P$salt$tag")
	}
	if parts[2] != "v=19" {
		return bad("version must be v=19")
	}
	var p argonParams
	var seen [3]bool
	fields := strings.Split(parts[3], ",")
	if len(fields) != 3 {
		return bad("parameters must be m=M,t=T,p=P")
	}
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok || v == "" || len(v) > 10 {
			return bad("malformed parameter " + strconv.Quote(f))
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return bad("parameter " + k + " is not a number")
		}
		switch k {
		case "m":
			if seen[0] || n < 8 || n > maxArgonMemoryKiB {
				return bad(fmt.Sprintf("m must be 8 to %d KiB, once", maxArgonMemoryKiB))
			}
			seen[0], p.memory = true, uint32(n)
		case "t":
			if seen[1] || n < 1 || n > maxArgonTime {
				return bad(fmt.Sprintf("t must be 1 to %d, once", maxArgonTime))
			}
			seen[1], p.time = true, uint32(n)
		case "p":
			if seen[2] || n < 1 || n > maxArgonThreads {
				return bad(fmt.Sprintf("p must be 1 to %d, once", maxArgonThreads))
			}
			seen[2], p.threads = true, uint8(n)
		default:
			return bad("unknown parameter " + strconv.Quote(k))
		}
	}
	if p.memory < 8*uint32(p.threads) {
		return bad("m must be at least 8*p")
	}
	var err error
	if p.salt, err = base64.RawStdEncoding.Strict().DecodeString(parts[4]); err != nil || len(p.salt) < 8 || len(p.salt) > 64 {
		return bad("salt must be 8 to 64 bytes of unpadded base64")
	}
	if p.tag, err = base64.RawStdEncoding.Strict().DecodeString(parts[5]); err != nil || len(p.tag) < 16 || len(p.tag) > 128 {
		return bad("tag must be 16 to 128 bytes of unpadded base64")
	}
	return p, nil
}

// verify reports whether password matches, in time independent of where
// the two differ (bcrypt compares in constant time; the argon2id tag is
// compared with crypto/subtle).
func (h passwordHash) verify(password string) bool {
	ok, _ := h.verifyAfterWait(password, nil)
	return ok
}

// verifyAfterWait is verify, except that when the check had to queue for
// an argon2id slot, stillAllowed (if not nil) is asked once the slot is
// taken: false skips the hash (checked false). A burst of guesses that all
// passed the login throttle before queueing is asked again after, so the
// ones queued behind the guess that locked the account hash nothing.
func (h passwordHash) verifyAfterWait(password string, stillAllowed func() bool) (ok, checked bool) {
	if h.bcrypt != nil {
		return bcrypt.CompareHashAndPassword(h.bcrypt, []byte(password)) == nil, true
	}
	a := h.argon
	if len(a.tag) == 0 {
		return false, true
	}
	// Each argon2id check takes a.memory KiB (64 MiB with our hashes): a
	// burst of logins must queue, not grow the process by 64 MiB each.
	waited := false
	select {
	case argonSlots <- struct{}{}:
	default:
		argonSlots <- struct{}{}
		waited = true
	}
	defer func() { <-argonSlots }()
	if waited && stillAllowed != nil && !stillAllowed() {
		return false, false
	}
	got := argon2.IDKey([]byte(password), a.salt, a.time, a.memory, a.threads, uint32(len(a.tag)))
	return subtle.ConstantTimeCompare(got, a.tag) == 1, true
}

// argonSlots bounds concurrent argon2id checks to the core count: more
// would not finish sooner, only hold more memory at once.
var argonSlots = make(chan struct{}, max(1, runtime.NumCPU()))
