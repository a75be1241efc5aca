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
// # Caveats
//
// A session created for a sid at the very moment that sid is ended by a
// back-channel logout (the login and the logout racing) may survive it;
// the issuer's own revocation of that sid's tokens still holds. If Redis
// restarts empty, sessions are gone and users log in again; enable
// appendonly to keep them. Expiry needs PEXPIREAT ... GT (Redis 7.0+).
package redis
