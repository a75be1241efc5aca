// Package redistokens puts the refresh lock and the grace records of
// package tokens on Redis (go-redis v9, any goredis.UniversalClient: a
// single Redis, Sentinel or Cluster), so that several gateway instances
// refresh each session once between them.
//
// # Lock
//
// Locker is a tokens.Locker: a short lock per session key, taken with
// SET key token NX PX ttl, where token is 128 random bits from crypto/rand
// naming this holding, and released with a Lua compare-and-delete, so a
// holder whose lock expired can never release the next holder's. While
// held, the lock is extended every ttl/3 by a compare-and-PEXPIRE (for at
// most the MaxHold option), so it outlives ttl only while its holder
// lives: a crashed instance's lock frees itself after ttl. Other callers
// poll with a jittered exponential back-off (2 ms to 50 ms) until the lock
// frees, their context ends or MaxWait (ttl by default) passes; then the
// Manager re-reads the session and the grace record, and uses the
// winner's tokens instead of refreshing again.
//
// Fencing: Locker is a tokens.FencedLocker. Lease.Held, and LockFenced's
// held function, tell the holder whether it still holds the lock (a
// compare of its token; ErrLockLost matches tokens.ErrLockLost), so that a
// holder that stalled beyond its lock can tell before it saves. The
// Manager calls it after the token endpoint answered; what it then saves
// is described under "Fencing" in package tokens (TestLockLostMidRefresh
// runs it against Redis).
//
// This is a single-instance lock in the sense of the Redis documentation
// (not Redlock): with Sentinel or Cluster, a failover that loses the key
// while a refresh is in flight lets a second instance refresh the same
// session too, which a rotating provider treats as reuse (the user logs in
// again). Failovers are rare and the window is one refresh long.
//
// # Grace records
//
// Grace is a tokens.GraceStore: SET key value NX PX ttl (the first
// rotation published wins) and GET. Package
// tokens seals every value (AES-256-GCM under a key derived from the old
// refresh token) and names it by a hash, so Redis never holds a token in
// the clear (TestTwoInstances checks every key and value that lands in
// Redis).
//
// # Keys
//
// Every key starts with the prefix given to NewLocker and NewGrace
// (DefaultPrefix when empty):
//
//	<prefix>lock:<key>     the lock's random token, PX ttl
//	<prefix><key>          a sealed grace record (key: "grace:<sha256 hex>"), PX grace window
//
// Every operation touches one key, so no hash tag is needed in a Cluster.
//
// # Errors
//
// Redis failures never panic: Locker errors match tokens.ErrLockUnavailable
// (and so tokens.ErrProviderUnavailable: the gateway answers 503 and keeps
// the session); Grace errors match tokens.ErrProviderUnavailable, which the
// Manager logs before it falls back to the provider. The go-redis error is
// kept in the chain for errors.Is.
package redistokens
