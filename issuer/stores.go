package issuer

import (
	"context"
	"time"

	"github.com/bffgate/bffgate/issuer/denylist"
	"github.com/bffgate/bffgate/issuer/keys"
	"github.com/bffgate/bffgate/issuer/storage"
)

// The store as each part of the issuer uses it. Every consumer names the
// few methods it calls, as fosite's handlers declare their storage: what
// depends on what is visible here, not hidden behind the whole
// storage.Store passed everywhere. storage.Store satisfies them all;
// New takes them from Config.Store.

// authorizeStore is what the authorization endpoint and the login form
// keep: the issuer's login sessions (its SSO cookie) and the codes.
type authorizeStore interface {
	LoginSession(ctx context.Context, id string) (storage.LoginSession, error)
	CreateLoginSession(ctx context.Context, s storage.LoginSession) error
	DeleteLoginSession(ctx context.Context, id string) error
	CreateCode(ctx context.Context, c storage.AuthCode) error
}

// tokenStore is what the token endpoint changes: a code is redeemed, a
// refresh token rotated, and a replayed one revokes its grant.
type tokenStore interface {
	RedeemCode(ctx context.Context, codeHash string, now time.Time, mint func(storage.AuthCode) (storage.Issued, error)) (storage.AuthCode, error)
	RotateRefresh(ctx context.Context, jti string, rotate bool, now time.Time, mint func(storage.RefreshToken) (storage.Issued, error)) error
	RevokeGrant(ctx context.Context, grantID string, deniedUntil, now time.Time) error
}

// lifecycleStore is what revocation (RFC 7009), introspection (RFC 7662)
// and the token checks of token exchange (RFC 8693) read and change beyond
// the denylist: an ID token is live while its login session is.
type lifecycleStore interface {
	RefreshToken(ctx context.Context, jti string) (storage.RefreshToken, error)
	LoginSession(ctx context.Context, id string) (storage.LoginSession, error)
	RevokeAccessToken(ctx context.Context, jti, grantID string, deniedUntil, now time.Time) error
}

// throttleStore is the login throttle's shared counters.
type throttleStore interface {
	LoginFailures(ctx context.Context, key string, now time.Time) (storage.LoginFailures, error)
	RecordLoginFailure(ctx context.Context, key string, now time.Time, p storage.LoginPolicy) (storage.LoginFailures, error)
	ResetLoginFailures(ctx context.Context, key string, now time.Time) (storage.LoginFailures, error)
}

// logoutStore is what RP-initiated logout ends: the login session and
// every grant made under it.
type logoutStore interface {
	LoginSession(ctx context.Context, id string) (storage.LoginSession, error)
	DeleteLoginSession(ctx context.Context, id string) error
	RevokeSID(ctx context.Context, sid string, deniedUntil, now time.Time) ([]string, error)
}

// agentStore is what agents and workloads keep (agentstate.go): the
// replay record of their assertions (RFC 7523 §3 item 7) and the client
// states an operator sets (bffgate agents disable|enable).
type agentStore interface {
	UseAssertion(ctx context.Context, key string, exp, now time.Time) error
	ClientStates(ctx context.Context) (map[string]storage.ClientState, error)
	SetClientDisabled(ctx context.Context, id string, disabled bool, now time.Time) (storage.ClientState, error)
}

// purgeStore is what the purge job runs.
type purgeStore interface {
	Purge(ctx context.Context, now time.Time) (int, error)
}

var (
	_ authorizeStore = storage.Store(nil)
	_ tokenStore     = storage.Store(nil)
	_ lifecycleStore = storage.Store(nil)
	_ throttleStore  = storage.Store(nil)
	_ logoutStore    = storage.Store(nil)
	_ purgeStore     = storage.Store(nil)
	_ agentStore     = storage.Store(nil)
	_ denylist.Store = storage.Store(nil)
	_ keys.Store     = storage.Store(nil)
)

// stores holds Config.Store once per consumer.
type stores struct {
	authorize authorizeStore
	token     tokenStore
	lifecycle lifecycleStore
	throttle  throttleStore
	logout    logoutStore
	purge     purgeStore
	agents    agentStore
}

func storesOf(st storage.Store) stores {
	return stores{authorize: st, token: st, lifecycle: st, throttle: st, logout: st, purge: st, agents: st}
}
