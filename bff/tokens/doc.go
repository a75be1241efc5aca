// Package tokens keeps the gateway's sessions supplied with valid access
// tokens: it refreshes them before they expire (RFC 6749 §6), merges
// concurrent refreshes of one session into one call at the provider,
// fetches and caches the gateway's own client-credentials token (RFC 6749
// §4.4), and revokes refresh tokens at logout (RFC 7009).
//
// # Refresh
//
// Manager.Fresh returns the session unchanged while its access token has
// more than Config.Skew left. Otherwise it refreshes, once per session at
// a time: callers of one process share one call (single-flight keyed by
// the session ID, or by a hash of the refresh token for the cookie store,
// whose sessions have no ID), and a Locker (in-process by default, Redis
// for several gateway instances) serialises the rest. The new access
// token and the rotated refresh token are saved in one store.Update, the
// atomic step the session store offers.
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
