// Package bolt is the issuer's storage.Store on a bbolt file: the default
// for a single bffgate instance. Engine is the storage.Engine on the file;
// Store is storage.Rules (every rule of the issuer's state, shared with the
// other engines) on it.
//
// The binary opens one bbolt file (internal/datafile) that the issuer and the
// gateway's session store share; each owns its own buckets, and this
// package's names all start with Config.BucketPrefix ("issuer." by
// default). There is one bucket per kind of record (keys, secrets, codes,
// grants, refresh tokens, the denylist, its change log, login sessions,
// the login throttle's counters) plus three indexes: grant -> refresh
// tokens, login session -> grants and expiry time -> record, the last of
// which lets Purge visit only what has expired instead of scanning every
// bucket.
//
// # Atomicity and durability
//
// Every method of the rules runs in one bbolt transaction, so RedeemCode, RotateRefresh
// and the revocations change all of their records or none. bbolt fsyncs on
// commit: once a method returns nil its change survives a crash (kill -9,
// power loss), and a crash before the commit leaves the previous state.
// Writers are serialised by bbolt, which is what makes a refresh rotation
// single-use: of two requests racing with the same refresh token exactly
// one finds it on the allowlist.
//
// # Caveats
//
// Values read inside a transaction point into the memory map and are only
// valid until it ends; this package decodes (copies) them before it
// returns. The mint callbacks of RedeemCode and RotateRefresh and the fn
// of UpdateKeys run inside the write transaction and hold bbolt's single
// writer lock while they run: they must be quick and must not call back
// into the Store (that would deadlock).
//
// The bucket names, index keys and value encodings are those of the first
// release (testdata/release1.db is a file written by it, opened by
// TestReleaseFixture): nothing is migrated.
//
// Records are JSON except the denylist and its log, which use a fixed
// binary form (8-byte expiry, kind, id) because they are the most numerous
// records and are read on every token check.
package bolt
