// Package redis is the gateway's server-side session store on Redis, for
// several gateway instances sharing sessions (go-redis v9 through a
// goredis.UniversalClient: a single Redis, Redis Sentinel or Redis
// Cluster; TLS and ACL users are the client's configuration). It also
// holds the Ended records with which the cookie store remembers
// back-channel logouts across instances (NewEnded).
//
// Store is the rules of session/tickets (shared with session/bolt) on this
// package's Engine; faults of the deployment are told apart by
// internal/redisfault.
//
// # Tickets
//
// As in session/bolt (oauth2-proxy's session tickets): the cookie carries a
// codec.Ticket, a random 16-byte id and a random 32-byte key; Redis holds,
// under the id, only the session sealed with AES-256-GCM under that key
// (codec.Seal). The key is never stored, so a Redis dump or a replica
// reveals no token and no claim, and a handle with a guessed or altered key
// opens nothing and deletes nothing.
//
// # Keys
//
// Every key starts with Config.Prefix ("bffgate:session:" by default):
//
//	<prefix>r:<id>      sealed record (id: base64url ticket id), PEXPIREAT its expiry
//	<prefix>sid:<sid>   sorted set of ids carrying the sid, scored by their expiry (ms)
//	<prefix>sub:<sub>   the same by subject
//	<prefix>ended-sid:<sid>  (NewEnded) "1", PEXPIREAT until
//	<prefix>ended-sub:<sub>  (NewEnded) since in Unix ns, PEXPIREAT until
//	<prefix>epoch       random text, no TTL: the near caches' check that Redis was not emptied
//
// and every write of a record publishes its id on the channel
// <prefix>invalidate (PUBLISH, classic pub/sub: a Cluster carries it to
// the subscribers of every node).
//
// No operation needs two keys in one slot, so no hash tag is used and a
// Redis Cluster spreads sessions over all its shards. Every single-record
// change is atomic (Update is WATCH/MULTI on the record; ending a session
// by sid or subject deletes a record only if it still holds what was read,
// with a one-key Lua compare-and-delete). The indexes are kept in order
// around the record instead, so that they always name at least every live
// session: index entries are added before a record is written and removed
// after it is deleted. An index entry may therefore outlive its record for
// a moment (after a crash, until its score passes and the next add prunes
// it); the ending of a sid or subject reads each record's clear header and
// ends only the sessions that really carry the value. An Update that keeps
// losing the race (Config.MaxRetries) fails with session.ErrUnavailable.
// Key names and encodings are those of the first release (TestReleaseFixture
// loads keys its store wrote).
//
// # Expiry
//
// A record's TTL is its session's expiry (the earlier of the idle and the
// absolute deadline, PEXPIREAT), moved on by every Update, so Redis drops
// sessions by itself and no sweeper is needed; Get also checks the expiry
// against Config.Now. Index members are scored by the session's expiry and
// pruned as they pass; an index key expires with its latest member.
//
// # Near cache
//
// With Config.Cache.Entries above zero and Run running, each instance
// keeps the records it read (Engine.Get) in memory, so that the read of an
// unchanged session, the one every proxied request makes, costs no round
// trip to Redis. Every write of a record (an Update's MULTI/EXEC, which
// covers refreshes, slides and Delete; the compare-and-delete script of
// ending by sid or subject) publishes the record's id in the same atomic
// step as the write, so that no committed write goes unannounced, and the
// writing instance forgets its own entry before the write returns. Expiry
// publishes nothing and needs nothing: an entry is never served at or past
// its record's expiry, which is the record's TTL in Redis.
//
// Staleness bound. Run subscribes to the channel and to a probe channel
// of its own, and every MaxStaleness/4 publishes on the latter, through
// the client (so to the master, where the writes go), the probe's send
// time. The probe reaches the subscription after every message the master
// published before it, so its arrival proves that every write committed
// before that send time has been applied. (A PING on the subscription
// would prove less: after a Sentinel failover go-redis keeps the
// subscription on the old master, which answers but hears no writes until
// it replicates from the new one.) An entry is served only while such a
// proof is younger than Config.Cache.MaxStaleness (1 s by default). So another instance serves a
// session that was written (logged out, ended by a back-channel logout,
// refreshed) normally until the invalidation reaches it, the time Redis
// takes to pass a message on (less than one round trip: it is sent when
// the write's reply is), and at worst MaxStaleness after the write
// returned, however the channel fails (on a Cluster, plus the cluster
// bus's delay between the record's node and the subscriber's). A channel
// that errs, reconnects, stays silent for MaxStaleness, or finds the epoch
// key gone or replaced (FLUSHALL, a restart that lost the data, which
// publish nothing) empties the cache, which every read then bypasses
// until a new probe vouches for it. A read that raced an invalidation
// does not remember what it read.
//
// Why not Redis 6 server-assisted client-side caching: go-redis v9's
// (experimental) implementation serves the standalone client only, on
// database 0 with RESP3, not Sentinel or Cluster; rueidis would be a second
// Redis client. Tracking in broadcast mode on every Cluster node would also
// have to follow slot migrations. The channel above works the same on all
// three deployments.
//
// # Caveats
//
// A session created for a sid at the very moment that sid is ended by a
// back-channel logout (the login and the logout racing) may survive it;
// the issuer's own revocation of that sid's tokens still holds. If Redis
// restarts empty, sessions are gone and users log in again; enable
// appendonly to keep them. Expiry needs PEXPIREAT ... GT (Redis 7.0+).
// The near cache does not hear of a record removed behind the gateway's
// back (a DEL by hand, an eviction under maxmemory) until the entry
// expires or is evicted: end sessions through the gateway (logout,
// back-channel logout). On a Cluster the epoch key lives on one node:
// flush every node, as FLUSHALL on a Cluster means anyway.
package redis
