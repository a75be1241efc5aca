// Package topology holds the tests of bffgate on the Redis topologies
// other than a single server: Redis Cluster and Redis Sentinel, each run
// by the tests themselves from the machine's redis-server and redis-cli
// (Redis 7.0 or later) on free loopback ports, in temporary directories,
// and stopped when the test ends.
//
// # Cluster
//
// Three masters without replicas (redis-server --cluster-enabled yes, then
// redis-cli --cluster create ... --cluster-replicas 0), reached through a
// go-redis ClusterClient built as bffgate builds it from redis.cluster_addrs.
// The tests show that:
//   - the session store (session/redis) and the issuer's state store
//     (issuer/storage/redis) pass their contract suites (sessiontest,
//     storagetest) on it;
//   - sessions spread over every shard (their keys carry no hash tag),
//     while every issuer key carries the {issuer} hash tag and so lives
//     in one slot, which the issuer's multi-key transactions need;
//   - a denylist addition is pushed to another issuer instance's
//     subscriber (and reaches a subscriber on every node: classic pub/sub
//     is broadcast over the cluster bus);
//   - the real bffgate binary, configured with redis.cluster_addrs and
//     both stores on redis, logs a user in, serves /bff/user and a proxied
//     API call, and reports ready.
//
// # Sentinel
//
// One master, one replica and one sentinel monitoring them (quorum 1).
// The sentinel requires a password (requirepass in its sentinel.conf; it
// refuses a client without one), the data nodes none. The tests reach it
// through a go-redis FailoverClient built as bffgate builds it from
// redis.sentinel_addrs, redis.master_name and redis.sentinel_password.
// The same contract suites and the same gateway run pass on it, and the
// bffgate process never prints the sentinel password. Then SENTINEL FAILOVER promotes the
// replica while a bffgate process runs: the sessions, the refresh token,
// the revocation and the gateway login made before the failover are still
// there afterwards, the clients move to the new master, new logins work, a
// denylist subscription made before the failover still gets pushes, and
// the contract suites pass again on the same clients.
//
// The test turns the old master into a replica itself (REPLICAOF) as soon
// as the sentinel has switched: the sentinel does the same, but only after
// its next INFO round to the old master and a grace period (ten seconds or
// more), which would double the test's time.
//
// # Caveats
//
// The tests skip when redis-server is not installed, and fail instead when
// BFFGATE_TEST_REDIS_URL is set (CI installs Redis, so a missing binary
// there is a broken setup, not a reason to skip). They never touch the
// machine's own Redis.
//
// The package has no API: everything is in its tests.
package topology
