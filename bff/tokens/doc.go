// Package tokens keeps the gateway's sessions supplied with valid access
// tokens: it refreshes them before they expire (RFC 6749 §6), merges
// concurrent refreshes of one session into one call at the provider,
// fetches and caches the gateway's own client-credentials token (RFC 6749
// §4.4), exchanges the session's token for tokens made for one API route
// (RFC 8693, Manager.Exchanged: see exchange.go), and revokes refresh
// tokens at logout (RFC 7009).
//
// # Refresh
//
// Manager.Fresh returns the session unchanged while its access token has
// more than Config.Skew left. Otherwise it refreshes, once per session at
// a time: callers of one process share one call (single-flight keyed by
// a hash of the session ID, or of the refresh token for a session without
// one), and a Locker (in-process by default, Redis for several gateway
// instances) serialises the rest. The new access token and the rotated
// refresh token are saved in one store.Update, the atomic step the
// session store offers.
//
// The access token's expiry is the earlier of now+expires_in and, for a
// JWT, its exp claim (AccessExpiry), read without checking the signature:
// it only ever makes the gateway refresh sooner.
//
// # Fencing
//
// A distributed lock lasts a ttl (Config.LockTTL; package redistokens
// keeps it alive while its holder runs, up to a maximum). A holder that
// stalls longer (a token endpoint slower than the lock, a paused
// process, Redis losing the key) may find that another instance took the
// lock and refreshed the same session meanwhile. So when the Locker is a
// FencedLocker, the Manager asks it after the token endpoint answered and
// before it saves whether the lock is still its own. If not, it logs a
// warning and counts result="lock_lost" in bffgate_token_refresh_total,
// and saves only what does not undo the other instance's refresh: when
// the other one left a grace record for the same old refresh token, its
// tokens are used instead of ours (the rotation published first wins;
// with the cookie store that record is the only shared one).
//
// Independently of the lock, every save compares inside store.Update:
// it writes only over the tokens the refresh started from. A session that
// holds other tokens by then was refreshed by another request or instance
// (or a grace record is older than its last rotation), and is returned as
// stored, without writing (result="concurrent"); the caller uses its
// tokens. That compare in the store's atomic step, not the lock, is what
// makes a lost lock harmless with a server-side store. Two exceptions
// keep the grant alive: a save identical to what is stored writes anyway,
// and a rotated refresh token is written over a session whose refresh
// token did not change (only the access token did): after this refresh
// used the old refresh token, ours may be the only one still valid.
//
// Fencing cannot stop two refreshes with one token at the provider: the
// check runs after the call. A provider that revokes the grant on reuse
// (RFC 9700 §4.14.2) ends the session then; one that keeps old refresh
// tokens valid (a reuse interval, or Keycloak's default) does not, and
// the gateway keeps one consistent set of tokens.
//
// # Rotation and the grace window
//
// A provider that rotates refresh tokens treats a second use of the old
// one as token theft and revokes the whole grant (RFC 9700 §4.14.2). With
// the cookie store every request that was already in flight carries the
// old cookie, and so the old refresh token; a request that arrives just
// after the refresh would use it again. So every rotation leaves a grace
// record for Config.GraceWindow: looked up by a hash of the old refresh
// token and encrypted under a key derived from it, it hands the new
// tokens to whoever still holds the old one (and only to them), without
// a second call to the provider. Each such response gets the updated
// cookie. The same record covers a server-side store's request that read
// the session just before another one refreshed it.
//
// # Security
//
// Tokens never appear in logs, metrics or error texts: log lines name a
// session by a short hash of its ID (or of its refresh token). Grace
// records hold tokens only encrypted (AES-256-GCM under an HKDF-SHA256
// key derived from the old refresh token), so a GraceStore backend such
// as Redis never sees them in the clear.
package tokens
