// Package redis is the issuer's storage.Store on Redis, for several issuer
// instances sharing one state (go-redis v9, through a
// goredis.UniversalClient: a single Redis, Redis Sentinel or Redis
// Cluster, with TLS and ACL users configured on the client).
//
// The Store is storage.Rules, every rule of the issuer's state written
// once, on the Redis Engine, which knows transactions and a dozen
// primitives (get, put, delete, small sets, the expiry index, the
// denylist's change log) and nothing of codes or grants. The contract
// suite (storagetest) runs over both the Store and the plain rules on the
// Engine; testdata/release1.json holds what the store before the engines
// wrote, which the current code reads and writes alike.
//
// # Keys
//
// Every key starts with Config.Prefix ("bffgate:" by default) followed by
// the hash tag "{issuer}", so all of the issuer's keys live in one Redis
// Cluster slot:
//
//	<prefix>{issuer}:keys                  JSON []storage.Key
//	<prefix>{issuer}:secret:<name>         raw secret bytes
//	<prefix>{issuer}:code:<hash>           JSON storage.AuthCode
//	<prefix>{issuer}:grant:<id>            JSON storage.Grant
//	<prefix>{issuer}:refresh:<jti>         JSON storage.RefreshToken (the allowlist)
//	<prefix>{issuer}:grant-refresh:<id>    set of a grant's refresh jtis
//	<prefix>{issuer}:sid-grants:<sid>      set of a login session's grant ids
//	<prefix>{issuer}:deny:<kind>:<id>      denylist entry: Until in Unix ns
//	<prefix>{issuer}:denylog               sorted set: the change log, scored by sequence
//	<prefix>{issuer}:denyseq               the change log's sequence counter
//	<prefix>{issuer}:expiry                sorted set: kind+key scored by expiry (ms), for Purge
//	<prefix>{issuer}:login:<id>            JSON storage.LoginSession
//	<prefix>{issuer}:login-failures:<key>  hash: the login throttle's state of one key
//	<prefix>{issuer}:assertion:<key>       a client assertion's replay record: its exp, 8 bytes (Unix ns)
//	<prefix>{issuer}:clients:states        JSON map[client id]storage.ClientState (agents disable/enable)
//	<prefix>{issuer}:registration:<id>     JSON storage.Registration (RFC 7591 dynamic registration)
//	<prefix>{issuer}:consent:<key>         JSON storage.Consent (a user's consents to a third-party client)
//	<prefix>{issuer}:denylist              pub/sub channel of denylist additions
//
// One slot is a deliberate choice. Code redemption, refresh rotation and
// the revocations each change records of several kinds (a code, a grant,
// refresh tokens, two indexes, the denylist and its change log) in one
// step, and a Redis transaction or script may only touch keys of one slot.
// Splitting the state per grant would leave the global change log and the
// sid index outside any one grant's slot, and rotation is addressed by
// jti, which names no grant. The issuer's state is small and its write
// rate low (one write per login or refresh), so one shard carries it with
// room to spare; the gateway's sessions, which are the bulk of the load,
// are spread over the whole cluster (see session/redis).
//
// # Atomicity
//
// Every Update of the Engine is one optimistic transaction: each key it
// reads is WATCHed before it is read, its writes are buffered (later reads
// in the transaction see them) and sent in one MULTI/EXEC. When another
// client changed a watched key in between, EXEC applies nothing and the
// rule runs again from its reads, at most Config.MaxRetries times; then it
// fails with ErrConflict, which matches storage.ErrUnavailable (the
// issuer answers 503), and nothing of it was applied. Of two instances
// racing on one refresh token exactly one commits and the other finds the
// token gone (storage.ErrNotFound); a replayed code finds the first
// redemption (*storage.CodeReusedError). The change log's sequence number
// is taken inside EXEC by a small Lua script (INCR), so sequence order is
// commit order and a poller never skips an entry committed behind its
// cursor; the same script publishes the entry on the denylist channel.
//
// Purge lists what is due from the expiry index without watching it (a
// purge would otherwise conflict with every grant), then watches the
// records it names and checks the index again: a record moved on by
// another writer meanwhile is left alone.
//
// The login throttle's counters change one key at a time, by a Lua script
// per call: a guessing attack sends many requests for one key at once, and
// WATCH would make them retry each other until they give up.
//
// # Expiry
//
// Every record carries a Redis TTL at its expiry plus Config.TTLGrace, so
// Redis never grows without bound even if no instance runs Purge; Purge
// (driven by the expiry index, whose scores are whole milliseconds: an
// entry is purged once its millisecond has passed, never early) is the
// primary means. The login throttle's state is the exception: it is not in the
// expiry index, and its TTL (its expiry plus Config.TTLGrace) alone removes
// it; until then its stored expiry, checked against the caller's clock,
// makes an expired state read as absent. The index sets shrink as Purge removes their members and carry
// the same TTL (PEXPIREAT ... GT, which needs Redis 7.0 or later).
//
// # Caveats
//
// Durability is Redis's: with the default RDB snapshots a crash of Redis
// loses the last writes, including revocations. Run Redis with
// appendonly yes and appendfsync everysec (or always) so that a revocation
// survives a Redis restart. If Redis restarts empty, every refresh token is
// refused (the allowlist is gone: users log in again), signing keys are
// generated afresh (tokens signed by the old keys stop verifying), and the
// denylist is empty; access tokens signed by a key that an issuer instance
// still holds in memory would be accepted again until they expire, which is
// why persistence matters. The change-log sequence is seeded from the
// clock (milliseconds times 1000) so that after such a restart new entries
// still sort after the cursors that instances hold.
//
// A Ring client is not supported (it cannot keep one slot's keys
// together for transactions).
package redis
