// Package storage is the embedded issuer's persistent state: signing keys,
// named secrets, authorization codes, grants, the refresh-token allowlist,
// the access-token denylist, the issuer's own login sessions and the
// counters of its login throttle.
//
// It follows ForgeRock AM's client-side token design: tokens are
// self-contained JWTs, so the store never holds a token. It holds what
// makes revocation real instead: an allowlist record for every live refresh
// token (a refresh token is honoured only while its record exists) and a
// denylist of revoked access tokens (by jti) and revoked grants (by grant
// id, which every token carries in its grant_id claim). Codes are kept under
// the SHA-256 of the code, never the code itself.
//
// Every rule is written once, in Rules, over an Engine: a backend that
// knows transactions and a dozen primitives, nothing of codes or grants
// (the engines live in sub-packages: bolt, redis, memory). Every method
// that changes more than one record does so in one transaction of the
// engine (a bbolt Update, a Redis WATCH/MULTI/EXEC): a crash leaves either
// the old state or the new, never half of a rotation. storagetest holds
// the contract suite that the store passes on every engine.
package storage

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Store is the issuer's state. Implementations are safe for concurrent
// use; all times are passed in by the caller (no hidden clocks).
type Store interface {
	// AgentStore is the replay record of client assertions and the
	// operator-set client states (agents.go).
	AgentStore
	// ClientStore is the dynamically registered clients and the
	// consents given to third-party clients (clients.go).
	ClientStore

	// Keys returns every stored key, active and retired.
	Keys(ctx context.Context) ([]Key, error)
	// UpdateKeys atomically replaces the key list with fn's result.
	UpdateKeys(ctx context.Context, fn func([]Key) ([]Key, error)) error

	// Secret returns the secret stored under name, creating it with gen
	// on first use (the zero-config client secret, cookie keys).
	Secret(ctx context.Context, name string, gen func() ([]byte, error)) ([]byte, error)

	// CreateCode stores an authorization code record.
	CreateCode(ctx context.Context, c AuthCode) error
	// RedeemCode atomically marks the code used and records what its
	// exchange minted: mint receives the code record and returns the
	// grant and tokens to store. The code record is returned.
	//
	// Errors: ErrNotFound (unknown or purged), ErrExpired (past
	// ExpiresAt), a *CodeReusedError (already redeemed: the caller revokes
	// the grant it names), or mint's own error (nothing is stored).
	RedeemCode(ctx context.Context, codeHash string, now time.Time, mint func(AuthCode) (Issued, error)) (AuthCode, error)

	// RotateRefresh atomically checks that the refresh token jti is on the
	// allowlist, removes it when rotate is true, and stores what mint
	// returns (the new refresh record, the grant's new access token).
	//
	// Errors: ErrNotFound when jti is not allowlisted (the caller tells a
	// revoked grant from a rotated-away token by asking Denied for the
	// grant), or mint's own error (nothing is changed). As for
	// RedeemCode, mint may run outside the write transaction and its
	// result be dropped (a concurrent rotation won: ErrNotFound).
	RotateRefresh(ctx context.Context, jti string, rotate bool, now time.Time, mint func(RefreshToken) (Issued, error)) error

	// RefreshToken returns the allowlist record of jti, or ErrNotFound.
	RefreshToken(ctx context.Context, jti string) (RefreshToken, error)

	// RevokeGrant removes every refresh token of the grant from the
	// allowlist and denylists the grant until deniedUntil, so that every
	// access token minted from it is inactive. Revoking an unknown or
	// already revoked grant is no error.
	RevokeGrant(ctx context.Context, grantID string, deniedUntil time.Time, now time.Time) error
	// RevokeAccessToken denylists one access token's jti until
	// deniedUntil and removes its grant's refresh tokens from the
	// allowlist (the seed design: a denylisted access token takes its
	// refresh tokens with it). grantID may be empty (client_credentials).
	RevokeAccessToken(ctx context.Context, jti, grantID string, deniedUntil time.Time, now time.Time) error
	// RevokeSID revokes every grant made under the issuer login session
	// sid (RP-initiated logout, the end of a login session) and returns
	// their ids.
	RevokeSID(ctx context.Context, sid string, deniedUntil time.Time, now time.Time) ([]string, error)

	// Denied reports whether a jti or grant id is on the denylist.
	Denied(ctx context.Context, kind DenyKind, id string) (bool, error)
	// DenylistChanges returns the denylist entries added after cursor, in
	// order, and the cursor to pass next time (the poll that lets an
	// instance learn of revocations made by another sharing the store).
	// The zero Cursor asks for every live entry.
	DenylistChanges(ctx context.Context, after Cursor, limit int) ([]DenyEntry, Cursor, error)

	// Purge deletes denylist entries whose Until is before now, codes
	// past their expiry, allowlist records past their expiry, grants with
	// no live refresh token past their expiry, expired login sessions and
	// expired login-throttle state (a backend whose records expire by
	// themselves may leave that to them). It reports how many records it
	// removed.
	Purge(ctx context.Context, now time.Time) (int, error)

	// CreateLoginSession, LoginSession and DeleteLoginSession keep the
	// issuer's own login sessions (its SSO cookie names one by ID).
	CreateLoginSession(ctx context.Context, s LoginSession) error
	LoginSession(ctx context.Context, id string) (LoginSession, error)
	DeleteLoginSession(ctx context.Context, id string) error

	// LoginFailures, RecordLoginFailure and ResetLoginFailures keep the
	// counters of the login throttle (brute-force protection of the login
	// form), shared by every issuer instance on the store. A key names
	// what is counted; the issuer passes a SHA-256 of a username or of a
	// client address, never the raw value. A key's state expires by itself
	// (no Purge needed for correctness) once LoginPolicy.Window has passed
	// since its count started and since its last lockout ended.
	//
	// LoginFailures returns the state of key at now: the zero value for an
	// unknown or expired key.
	LoginFailures(ctx context.Context, key string, now time.Time) (LoginFailures, error)
	// RecordLoginFailure atomically counts one failed login against key
	// under p and returns the new state. A failure that finds key locked
	// is not counted (the state is returned unchanged, Started false). The
	// MaxFailures-th failure of a window starts a lockout (Started true)
	// and clears the count; see LoginPolicy for its length.
	RecordLoginFailure(ctx context.Context, key string, now time.Time, p LoginPolicy) (LoginFailures, error)
	// ResetLoginFailures forgets key's state after a successful login,
	// unless key is locked at now: then it changes nothing and returns the
	// lock, which the caller honours by refusing the login (a correct
	// password that raced with the failures that locked the key does not
	// unlock it). Otherwise it returns the zero value; an unknown key is
	// no error.
	ResetLoginFailures(ctx context.Context, key string, now time.Time) (LoginFailures, error)

	// Ping reports whether the backend is reachable (/readyz).
	Ping(ctx context.Context) error
}

// LoginPolicy is how RecordLoginFailure counts failures and locks a key.
type LoginPolicy struct {
	// MaxFailures failures within Window of the first lock the key.
	MaxFailures int
	// Window is how long a count lasts from its first failure, and how
	// long a key remembers its lockouts after the last one ended (so that
	// a guesser who waits out a lockout meets a longer one next).
	Window time.Duration
	// Lockout is the length of the first lockout; each further lockout
	// of the key doubles the previous one, up to MaxLockout.
	Lockout    time.Duration
	MaxLockout time.Duration
}

// Validate reports what is wrong with p, naming the field.
func (p LoginPolicy) Validate() error {
	switch {
	case p.MaxFailures < 1:
		return fmt.Errorf("storage: LoginPolicy.MaxFailures is %d; it must be at least 1", p.MaxFailures)
	case p.Window < time.Millisecond:
		return fmt.Errorf("storage: LoginPolicy.Window is %v; it must be at least 1ms", p.Window)
	case p.Lockout < time.Millisecond:
		return fmt.Errorf("storage: LoginPolicy.Lockout is %v; it must be at least 1ms", p.Lockout)
	case p.MaxLockout < p.Lockout:
		return fmt.Errorf("storage: LoginPolicy.MaxLockout (%v) is shorter than Lockout (%v)", p.MaxLockout, p.Lockout)
	}
	return nil
}

// LockoutAfter returns the length of the lockout that follows n earlier
// lockouts of a key: Lockout doubled n times, at most MaxLockout.
func (p LoginPolicy) LockoutAfter(n int) time.Duration {
	d := p.Lockout
	for range n {
		if d >= p.MaxLockout/2 {
			return p.MaxLockout
		}
		d *= 2
	}
	return min(d, p.MaxLockout)
}

// LoginFailures is the state of one login-throttle key.
type LoginFailures struct {
	// Count is the failures counted in the current window; a lockout
	// starts the next window at zero.
	Count int
	// Lockouts is how many lockouts the key has had since its state
	// began; it sets the length of the next one.
	Lockouts int
	// LockedUntil is the end of the key's latest lockout (zero: none).
	// The key is locked while now is before it.
	LockedUntil time.Time
	// Started is set by RecordLoginFailure when this failure started a
	// lockout.
	Started bool
}

// MaxLoginKeyLen bounds a login-throttle key.
const MaxLoginKeyLen = 256

// CheckLoginKey reports a login-throttle key the stores refuse: empty or
// longer than MaxLoginKeyLen bytes.
func CheckLoginKey(key string) error {
	if key == "" || len(key) > MaxLoginKeyLen {
		return fmt.Errorf("storage: login-throttle key is %d bytes; it must be 1 to %d (pass a hash, not the raw value)", len(key), MaxLoginKeyLen)
	}
	return nil
}

// Locked reports whether the key is locked at now.
func (f LoginFailures) Locked(now time.Time) bool { return now.Before(f.LockedUntil) }

// Key is one stored key. Private holds the private (or symmetric) key as a
// JSON Web Key; it never leaves the store except to the keys package.
type Key struct {
	ID      string    // kid
	Alg     string    // JWS alg (RS256, ES384, HS512, ...) or "dir" for JWE
	Use     string    // "sig" or "enc"
	Private []byte    // JWK JSON, private part included
	Active  bool      // the one key of its Alg that signs or encrypts new tokens
	Created time.Time // when it was generated or imported
	// Retired is when it stopped being active (zero while active). A
	// retired key keeps verifying until every token it made has expired.
	Retired time.Time
}

// AuthCode is the record behind one authorization code (RFC 6749 §4.1.2).
type AuthCode struct {
	Hash                string // SHA-256 of the code, base64url; the key
	ClientID            string
	RedirectURI         string
	Scope               string
	Nonce               string
	CodeChallenge       string
	CodeChallengeMethod string
	Subject             string
	SID                 string // issuer login session id
	AuthTime            time.Time
	ExpiresAt           time.Time
	// Claims carries user claims frozen at authorization (JSON object).
	Claims []byte
	// RedeemedGrant is set once the code has been exchanged.
	RedeemedGrant string
	// Resource is the RFC 8707 resource indicator of the request, "" for
	// none.
	Resource string `json:",omitempty"`
}

// Grant is one authorization: what a client was allowed, for whom, under
// which issuer login session. Every token minted from it carries its ID.
type Grant struct {
	ID        string
	ClientID  string
	Subject   string
	SID       string
	Scope     string
	AuthTime  time.Time
	Created   time.Time
	ExpiresAt time.Time // the latest expiry of any of its refresh tokens
	Claims    []byte    // user claims (JSON object)
}

// RefreshToken is the allowlist record of one live refresh token.
type RefreshToken struct {
	JTI       string
	GrantID   string
	ClientID  string
	Subject   string
	SID       string
	Scope     string
	IssuedAt  time.Time
	ExpiresAt time.Time
	// Resource is the grant's RFC 8707 resource indicator, "" for none:
	// a refresh may keep it, never change it.
	Resource string `json:",omitempty"`
}

// Issued is what one token-endpoint call minted, stored atomically with
// the code redemption or refresh rotation that produced it.
type Issued struct {
	// Grant is stored (created or updated) when non-nil.
	Grant *Grant
	// Refresh is put on the allowlist when non-nil.
	Refresh *RefreshToken
}

// DenyKind says what a denylist entry names.
type DenyKind string

const (
	DenyJTI   DenyKind = "jti"   // one access token
	DenyGrant DenyKind = "grant" // every token of a grant
)

// DenyEntry is one denylist entry.
type DenyEntry struct {
	Kind  DenyKind
	ID    string
	Until time.Time // purged after this; set to token exp plus the purge delay
}

// Cursor marks a position in the denylist's change log.
type Cursor uint64

// LoginSession is the issuer's own login session: the user authenticated
// at the issuer, named by the issuer's SSO cookie.
type LoginSession struct {
	ID        string
	Subject   string
	AuthTime  time.Time
	ExpiresAt time.Time
}

// Argument checks the implementations share, so that every store refuses
// the same calls with the same words.

// CheckRevoke reports a revocation (op: "revoke grant", "revoke access
// token", "revoke sid") whose id (named what) is empty or whose
// deniedUntil is zero; hint says what deniedUntil should be.
func CheckRevoke(op, what, id string, deniedUntil time.Time, hint string) error {
	switch {
	case id == "":
		return fmt.Errorf("storage: %s: %s is empty", op, what)
	case deniedUntil.IsZero():
		return fmt.Errorf("storage: %s: deniedUntil is zero; pass %s", op, hint)
	}
	return nil
}

// CheckNewCode reports an authorization code CreateCode refuses.
func CheckNewCode(c AuthCode) error {
	switch {
	case c.Hash == "":
		return errors.New("storage: create code: Hash is empty")
	case c.ExpiresAt.IsZero():
		return errors.New("storage: create code: ExpiresAt is zero")
	case c.RedeemedGrant != "":
		return errors.New("storage: create code: RedeemedGrant is set on a new code")
	}
	return nil
}

// CheckNewLoginSession reports a login session CreateLoginSession refuses.
func CheckNewLoginSession(ls LoginSession) error {
	switch {
	case ls.ID == "":
		return errors.New("storage: create login session: ID is empty")
	case ls.ExpiresAt.IsZero():
		return errors.New("storage: create login session: ExpiresAt is zero")
	}
	return nil
}
