package storage

import (
	"context"
	"time"
)

// Engine is the seam between the issuer's rules and a storage backend
// (bbolt, Redis, memory). It knows transactions and a dozen primitive
// operations, nothing of codes, grants or revocation: every rule lives
// once, in Rules, on top of any Engine (the way dex keeps its storage
// backends dumb). A new kind of state is a new Bucket, not a new method in
// every backend.
type Engine interface {
	// View runs fn in a read-only transaction: a consistent snapshot.
	// Writes through its Tx fail.
	View(ctx context.Context, fn func(Tx) error) error
	// Update runs fn in a read-write transaction and commits its writes
	// all together, or none of them: when fn returns an error, nothing
	// it wrote is applied and Update returns that error unchanged. An
	// engine with optimistic transactions (Redis) may run fn more than
	// once; fn must have no effect outside its Tx and the variables it
	// resets on every run. Update returns only once the commit is as
	// durable as the engine makes it (on disk for bbolt): the caller may
	// acknowledge what fn did.
	//
	// An error of the engine itself (a full disk, a lost connection, a
	// conflict that outlasted the retries) matches ErrUnavailable.
	Update(ctx context.Context, fn func(Tx) error) error
	// Ping reports whether the engine can be read and written.
	Ping(ctx context.Context) error
}

// Tx is one transaction's view of the engine. Values returned are copies
// the caller may keep; values passed in are not retained by reference.
// Errors of the engine match ErrUnavailable; a missing record is no error
// (Get returns nil).
type Tx interface {
	// Get returns the value stored under key in b, or nil.
	Get(b Bucket, key string) ([]byte, error)
	// Put stores value under key in b. value must not be empty.
	Put(b Bucket, key string, value []byte) error
	// Delete removes key from b; a missing key is no error.
	Delete(b Bucket, key string) error

	// AddMember and RemoveMember change the set owner of index ix;
	// Members lists it in byte order.
	AddMember(ix Index, owner, member string) error
	RemoveMember(ix Index, owner, member string) error
	Members(ix Index, owner string) ([]string, error)

	// Expire enters (kind, id) in the expiry index at at, and Unexpire
	// takes that entry out again (at must be the time it was entered
	// with). An engine with expiring keys (Redis) may also let the record
	// expire by itself at about that time.
	Expire(kind ExpiryKind, id string, at time.Time) error
	Unexpire(kind ExpiryKind, id string, at time.Time) error
	// Due lists up to limit entries of the expiry index at or before
	// now, earliest first (ties in kind, then id byte order).
	Due(now time.Time, limit int) ([]Due, error)

	// AppendLog appends e to the denylist's change log under a cursor
	// greater than every cursor before it, and enters the entry in the
	// expiry index (ExpireLog) at e.Until. The cursor is taken in commit
	// order, so a reader that has seen cursor c never later finds a new
	// entry below c; an engine may assign it only at commit (Redis takes
	// it inside EXEC), which is why it is not returned.
	AppendLog(e DenyEntry) error
	// Log returns up to limit (<= 0: no limit) log entries after the
	// cursor after, in order.
	Log(after Cursor, limit int) ([]LogEntry, error)
	// DeleteLog removes the log entry at c; a missing entry is no error.
	DeleteLog(c Cursor) error
}

// Prefetcher is a Tx that can read several records in one step, which an
// engine whose every read is a round trip (Redis) offers. The rules call
// it with the records a rule is about to read; it changes nothing, and
// the reads that follow return what it read (or the transaction's own
// writes).
type Prefetcher interface {
	Prefetch(refs ...Ref) error
}

// Ref names one record.
type Ref struct {
	Bucket Bucket
	Key    string
}

// Bucket names one kind of record: a map from string keys to byte values.
type Bucket uint8

// The buckets of the issuer's state. Their stored names (bbolt bucket
// names, Redis key infixes) are the engines' business and never change:
// a data file written by an earlier release opens with a later one.
const (
	BucketKeys          Bucket = iota + 1 // "keys": JSON []Key
	BucketSecrets                         // name: raw secret bytes
	BucketCodes                           // code hash: JSON AuthCode
	BucketGrants                          // grant id: JSON Grant
	BucketRefresh                         // jti: JSON RefreshToken (the allowlist)
	BucketDeny                            // DenyKey: 8 bytes, Until in Unix ns, big endian
	BucketLogin                           // login session id: JSON LoginSession
	BucketLoginFailures                   // throttle key: JSON loginRecord
	BucketAssertions                      // replay key: 8 bytes, the assertion's exp in Unix ns, big endian
	BucketClients                         // "states": JSON map[client id]ClientState
	BucketRegistrations                   // client id: JSON Registration (RFC 7591)
	BucketConsents                        // consentKey(subject, client id): JSON Consent
)

// buckets lists every bucket, for engines that create them up front.
var buckets = [...]Bucket{BucketKeys, BucketSecrets, BucketCodes, BucketGrants, BucketRefresh, BucketDeny, BucketLogin, BucketLoginFailures, BucketAssertions, BucketClients, BucketRegistrations, BucketConsents}

// AllBuckets returns every Bucket.
func AllBuckets() []Bucket { return buckets[:] }

// Index names one family of small sets, owner to members.
type Index uint8

const (
	IndexGrantRefresh Index = iota + 1 // grant id -> its live refresh jtis
	IndexSIDGrants                     // login session id -> its grant ids
)

// ExpiryKind says what an expiry-index entry names (its byte in the
// stored index key; the values are those of the first release).
type ExpiryKind byte

const (
	ExpireCode          ExpiryKind = 'c' // id: code hash
	ExpireRefresh       ExpiryKind = 'r' // id: jti
	ExpireGrant         ExpiryKind = 'g' // id: grant id
	ExpireDeny          ExpiryKind = 'd' // id: DenyKey
	ExpireLog           ExpiryKind = 'l' // id: the cursor, 8 bytes big endian
	ExpireLogin         ExpiryKind = 's' // id: login session id
	ExpireLoginFailures ExpiryKind = 'f' // id: throttle key
	ExpireAssertion     ExpiryKind = 'a' // id: replay key of a client assertion
	ExpireRegistration  ExpiryKind = 'n' // id: a dynamically registered client id
	ExpireConsent       ExpiryKind = 'o' // id: consentKey
)

// Due is one entry of the expiry index.
type Due struct {
	At   time.Time
	Kind ExpiryKind
	ID   string
}

// LogEntry is one entry of the denylist's change log.
type LogEntry struct {
	Cursor Cursor
	Entry  DenyEntry
}

// DenyKey is the key of a denylist entry in BucketDeny: kind, a NUL, then
// id (kinds never hold a NUL, so the split is unambiguous).
func DenyKey(kind DenyKind, id string) string {
	return string(kind) + "\x00" + id
}
