// Package bolt is the gateway's server-side session store on a bbolt file
// (the default in the zero-config run), and the Ended records with which
// the cookie store remembers back-channel logouts and deleted sessions.
//
// Store is the rules of session/tickets (shared with session/redis) on
// this package's Engine, plus the sweeper of expired sessions.
//
// # Tickets
//
// The store follows oauth2-proxy's session tickets: the browser's cookie
// carries a codec.Ticket, a random 16-byte id and a random 32-byte key; the
// file holds, under the id, the session encrypted with AES-256-GCM under
// that key (codec.Seal). The key is never stored, so a copy of the data file
// reveals no token and no claim, and a handle with an altered key opens
// nothing (and deletes nothing).
//
// What the file does hold in the clear is what the store needs without a
// key: each record's sid, subject and expiry (the authenticated clear
// header of codec.Seal), the sid and subject indexes that back-channel
// logout ends sessions through, and an expiry index that the sweeper walks.
//
// # Buckets
//
// The file is shared with the issuer's storage (issuer/storage/bolt, whose
// buckets start with "issuer."); internal/datafile opens it and owns the
// layout of both. Every bucket here starts with "sessions/":
//
//	sessions/records   id (16 bytes)               -> sealed record
//	sessions/by_sid    uvarint len|sid|id          -> empty
//	sessions/by_sub    uvarint len|sub|id          -> empty
//	sessions/expiry    unix nanos (8, BE)|id       -> empty
//	sessions/ended_sid sid or deleted-session key  -> until (8, BE nanos)
//	sessions/ended_sub subject                     -> since (8) | until (8)
//
// # Atomicity and durability
//
// The names and encodings are those of the first release:
// testdata/release1.db, written by it, opens in TestReleaseFixture.
//
// Every write is one bbolt transaction: a record and its index entries
// change together or not at all, and a kill -9 leaves the last committed
// state. Update runs its fn inside the write transaction, so concurrent
// Updates of one session are serialised and none is lost; fn holds bbolt's
// single writer lock while it runs, so it must be quick and must not call
// back into the Store.
//
// # Caveats
//
// A session without any expiry (no idle timeout and no absolute expiry) is
// never swept; the gateway always sets an absolute expiry.
package bolt
