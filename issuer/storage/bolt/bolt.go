package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/bffgate/bffgate/internal/boltfault"
	"github.com/bffgate/bffgate/internal/datafile"
	"github.com/bffgate/bffgate/issuer/storage"
)

// Config configures a Store.
type Config struct {
	// BucketPrefix starts the name of every bucket the Store owns, keeping
	// them apart from the other users of the shared file. Default "issuer.".
	BucketPrefix string
	// PurgeBatch is how many expired records Purge removes per write
	// transaction, so that a large purge does not hold bbolt's writer lock
	// for long. Default 5000.
	PurgeBatch int
}

// DefaultConfig returns the defaults New fills in.
func DefaultConfig() Config {
	return Config{BucketPrefix: "issuer.", PurgeBatch: 5000}
}

// Store is the issuer's storage.Store on a bbolt database: the rules of
// storage.Rules on this package's Engine. It is safe for concurrent use.
// It does not own the *bolt.DB: the caller closes it.
type Store struct {
	*storage.Rules
	engine *Engine
}

var _ storage.Store = (*Store)(nil)

// New returns a Store on db, creating its buckets when missing.
func New(db *bolt.DB, cfg Config) (*Store, error) {
	def := DefaultConfig()
	if cfg.PurgeBatch == 0 {
		cfg.PurgeBatch = def.PurgeBatch
	}
	if cfg.PurgeBatch < 0 {
		return nil, fmt.Errorf("bolt: Config.PurgeBatch is %d; it must be positive", cfg.PurgeBatch)
	}
	e, err := NewEngine(db, cfg.BucketPrefix)
	if err != nil {
		return nil, err
	}
	r, err := storage.NewRules(e, storage.RulesConfig{PurgeBatch: cfg.PurgeBatch})
	if err != nil {
		return nil, err
	}
	return &Store{Rules: r, engine: e}, nil
}

// Engine is the storage.Engine on a bbolt database: each bucket of the
// issuer's state is a bbolt bucket, each index a bucket of composite keys.
// The bucket names and key encodings are those of the first release, so a
// data file written by any earlier bffgate opens unchanged.
type Engine struct {
	db    *bolt.DB
	names datafile.IssuerBuckets
	probe *boltfault.Probe // Ping's write check
	batch batcher          // group commit of Update (batch.go)
}

var _ storage.Engine = (*Engine)(nil)

// NewEngine returns the Engine on db for the buckets named with prefix
// (empty: "issuer."), creating them when missing.
func NewEngine(db *bolt.DB, prefix string) (*Engine, error) {
	if db == nil {
		return nil, errors.New("bolt: New: db is nil")
	}
	if prefix == "" {
		prefix = DefaultConfig().BucketPrefix
	}
	e := &Engine{db: db, names: datafile.Issuer(prefix)}
	err := db.Update(func(tx *bolt.Tx) error {
		for _, name := range e.names.All() {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, e.fault("create buckets", err)
	}
	e.probe = boltfault.NewProbe(db, e.names.Health, nil)
	return e, nil
}

// fault adds context to an error of bbolt. Every fault of the data file (a
// full disk, an I/O error, a read-only filesystem, a closed database, a
// lock timeout: boltfault.Is) matches storage.ErrUnavailable, which the
// issuer answers as 503 temporarily_unavailable; the message names the
// file, for the operator.
func (e *Engine) fault(op string, err error) error {
	if err == nil {
		return nil
	}
	if boltfault.Is(err) {
		return fmt.Errorf("bolt: %s in data file %s: %w: %w", op, e.db.Path(), storage.ErrUnavailable, err)
	}
	return fmt.Errorf("bolt: %s: %w", op, err)
}

// View runs fn in a bbolt read transaction.
func (e *Engine) View(ctx context.Context, fn func(storage.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var fnErr error
	err := e.db.View(func(tx *bolt.Tx) error {
		fnErr = fn(e.wrap(tx))
		return fnErr
	})
	if err != nil && fnErr == nil {
		return e.fault("read", err)
	}
	return err
}

// Update runs fn in a bbolt write transaction, committed together with
// those of concurrent callers (group commit, batch.go); bbolt fsyncs on
// commit, so when Update returns nil the change survives a crash (kill -9,
// power loss), and a crash before the commit leaves the previous state.
// bbolt's single writer is what makes a refresh rotation single-use: of
// two requests racing with the same refresh token exactly one finds it on
// the allowlist, in one batch or in two. Once queued, fn runs even if ctx
// is cancelled meanwhile (the caller's answer may be lost, the commit is
// not half-done).
func (e *Engine) Update(ctx context.Context, fn func(storage.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return e.update(fn)
}

// Ping reports whether the database is open and can be written (a
// boltfault.Probe, reused for a second).
func (e *Engine) Ping(ctx context.Context) error {
	if err := e.View(ctx, func(storage.Tx) error { return nil }); err != nil {
		return fmt.Errorf("bolt: ping: %w", err)
	}
	if err := e.probe.Check(ctx); err != nil {
		return fmt.Errorf("bolt: ping data file %s: %w: %w", e.db.Path(), storage.ErrUnavailable, err)
	}
	return nil
}

// txn is one bbolt transaction with the Engine's buckets at hand.
type txn struct {
	e  *Engine
	tx *bolt.Tx
	b  struct {
		keys, secrets, codes, grants, refresh, grantRefresh, sidGrants, deny, denylog, login, expiry, loginFailures, assertions, clients, registrations, consents *bolt.Bucket
	}
}

var _ storage.Tx = (*txn)(nil)

func (e *Engine) wrap(tx *bolt.Tx) *txn {
	t := &txn{e: e, tx: tx}
	n := e.names
	t.b.keys = tx.Bucket(n.Keys)
	t.b.secrets = tx.Bucket(n.Secrets)
	t.b.codes = tx.Bucket(n.Codes)
	t.b.grants = tx.Bucket(n.Grants)
	t.b.refresh = tx.Bucket(n.Refresh)
	t.b.grantRefresh = tx.Bucket(n.GrantRefresh)
	t.b.sidGrants = tx.Bucket(n.SIDGrants)
	t.b.deny = tx.Bucket(n.Deny)
	t.b.denylog = tx.Bucket(n.DenyLog)
	t.b.login = tx.Bucket(n.Login)
	t.b.expiry = tx.Bucket(n.Expiry)
	t.b.loginFailures = tx.Bucket(n.LoginFailures)
	t.b.assertions = tx.Bucket(n.Assertions)
	t.b.clients = tx.Bucket(n.Clients)
	t.b.registrations = tx.Bucket(n.Registrations)
	t.b.consents = tx.Bucket(n.Consents)
	if tx.Writable() {
		// The change log only grows at its end and the expiry index
		// mostly does (keys start with a time): pack their pages full
		// instead of bbolt's default half-full split.
		t.b.denylog.FillPercent = 0.95
		t.b.expiry.FillPercent = 0.9
	}
	return t
}

func (t *txn) bucket(b storage.Bucket) (*bolt.Bucket, error) {
	var bk *bolt.Bucket
	switch b {
	case storage.BucketKeys:
		bk = t.b.keys
	case storage.BucketSecrets:
		bk = t.b.secrets
	case storage.BucketCodes:
		bk = t.b.codes
	case storage.BucketGrants:
		bk = t.b.grants
	case storage.BucketRefresh:
		bk = t.b.refresh
	case storage.BucketDeny:
		bk = t.b.deny
	case storage.BucketLogin:
		bk = t.b.login
	case storage.BucketLoginFailures:
		bk = t.b.loginFailures
	case storage.BucketAssertions:
		bk = t.b.assertions
	case storage.BucketClients:
		bk = t.b.clients
	case storage.BucketRegistrations:
		bk = t.b.registrations
	case storage.BucketConsents:
		bk = t.b.consents
	default:
		return nil, fmt.Errorf("bolt: unknown bucket %d", b)
	}
	if bk == nil {
		return nil, fmt.Errorf("bolt: bucket %d is missing from data file %s", b, t.e.db.Path())
	}
	return bk, nil
}

func (t *txn) index(ix storage.Index) (*bolt.Bucket, error) {
	switch ix {
	case storage.IndexGrantRefresh:
		return t.b.grantRefresh, nil
	case storage.IndexSIDGrants:
		return t.b.sidGrants, nil
	}
	return nil, fmt.Errorf("bolt: unknown index %d", ix)
}

// Get copies the value out: what bbolt returns points into the memory
// map and is valid only until the transaction ends.
func (t *txn) Get(b storage.Bucket, key string) ([]byte, error) {
	bk, err := t.bucket(b)
	if err != nil {
		return nil, err
	}
	if v := bk.Get([]byte(key)); v != nil {
		return bytes.Clone(v), nil
	}
	return nil, nil
}

// Put hands bbolt a copy: bbolt keeps the slice until commit.
func (t *txn) Put(b storage.Bucket, key string, value []byte) error {
	bk, err := t.bucket(b)
	if err != nil {
		return err
	}
	if len(value) == 0 {
		return fmt.Errorf("bolt: put %q: empty value", key)
	}
	return t.e.fault("put", bk.Put([]byte(key), bytes.Clone(value)))
}

func (t *txn) Delete(b storage.Bucket, key string) error {
	bk, err := t.bucket(b)
	if err != nil {
		return err
	}
	return t.e.fault("delete", bk.Delete([]byte(key)))
}

func (t *txn) AddMember(ix storage.Index, owner, member string) error {
	bk, err := t.index(ix)
	if err != nil {
		return err
	}
	return t.e.fault("put index entry", bk.Put(indexKey(owner, member), nil))
}

func (t *txn) RemoveMember(ix storage.Index, owner, member string) error {
	bk, err := t.index(ix)
	if err != nil {
		return err
	}
	return t.e.fault("delete index entry", bk.Delete(indexKey(owner, member)))
}

// Members lists the members stored under owner, copied out of the
// transaction.
func (t *txn) Members(ix storage.Index, owner string) ([]string, error) {
	bk, err := t.index(ix)
	if err != nil {
		return nil, err
	}
	prefix := indexPrefix(owner)
	var out []string
	c := bk.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		out = append(out, string(k[len(prefix):]))
	}
	return out, nil
}

func (t *txn) Expire(kind storage.ExpiryKind, id string, at time.Time) error {
	return t.e.fault("put expiry entry", t.b.expiry.Put(expiryKey(at, byte(kind), id), nil))
}

func (t *txn) Unexpire(kind storage.ExpiryKind, id string, at time.Time) error {
	return t.e.fault("delete expiry entry", t.b.expiry.Delete(expiryKey(at, byte(kind), id)))
}

// Due walks the expiry index from its start: its keys begin with the
// time, so it visits only what is due.
func (t *txn) Due(now time.Time, limit int) ([]storage.Due, error) {
	max := nanos(now)
	var out []storage.Due
	c := t.b.expiry.Cursor()
	for k, _ := c.First(); k != nil && len(k) > 8 && be64(k) <= max; k, _ = c.Next() {
		if limit > 0 && len(out) == limit {
			break
		}
		out = append(out, storage.Due{At: fromNanos(be64(k)), Kind: storage.ExpiryKind(k[8]), ID: string(k[9:])})
	}
	return out, nil
}

// AppendLog keys the entry by the log bucket's sequence, which bbolt
// takes in the write transaction: sequence order is commit order.
func (t *txn) AppendLog(e storage.DenyEntry) error {
	seq, err := t.b.denylog.NextSequence()
	if err != nil {
		return t.e.fault("next log sequence", err)
	}
	if err := t.b.denylog.Put(u64(seq), encodeLogEntry(e)); err != nil {
		return t.e.fault("append log", err)
	}
	return t.Expire(storage.ExpireLog, storage.LogExpiryID(storage.Cursor(seq)), e.Until)
}

func (t *txn) Log(after storage.Cursor, limit int) ([]storage.LogEntry, error) {
	var out []storage.LogEntry
	c := t.b.denylog.Cursor()
	for k, v := c.Seek(u64(uint64(after) + 1)); k != nil; k, v = c.Next() {
		if limit > 0 && len(out) >= limit {
			break
		}
		e, err := decodeLogEntry(v)
		if err != nil {
			return nil, fmt.Errorf("denylog entry %d of data file %s: %w", be64(k), t.e.db.Path(), err)
		}
		out = append(out, storage.LogEntry{Cursor: storage.Cursor(be64(k)), Entry: e})
	}
	return out, nil
}

func (t *txn) DeleteLog(c storage.Cursor) error {
	return t.e.fault("delete log entry", t.b.denylog.Delete(u64(uint64(c))))
}

func indexPrefix(owner string) []byte      { return datafile.IssuerIndexPrefix(owner) }
func indexKey(owner, member string) []byte { return datafile.IssuerIndexKey(owner, member) }
func expiryKey(t time.Time, kind byte, id string) []byte {
	return datafile.IssuerExpiryKey(t, kind, id)
}

// encodeLogEntry is 8 bytes of Until, the kind, a NUL and the id.
func encodeLogEntry(e storage.DenyEntry) []byte {
	return append(u64(nanos(e.Until)), storage.DenyKey(e.Kind, e.ID)...)
}

func decodeLogEntry(v []byte) (storage.DenyEntry, error) {
	if len(v) < 10 {
		return storage.DenyEntry{}, errors.New("truncated")
	}
	rest := v[8:]
	i := bytes.IndexByte(rest, 0)
	if i < 0 {
		return storage.DenyEntry{}, errors.New("no kind separator")
	}
	return storage.DenyEntry{
		Kind:  storage.DenyKind(rest[:i]),
		ID:    string(rest[i+1:]),
		Until: fromNanos(be64(v)),
	}, nil
}

func nanos(t time.Time) uint64     { return datafile.Nanos(t) }
func fromNanos(n uint64) time.Time { return datafile.FromNanos(n) }
func u64(v uint64) []byte          { return datafile.U64(v) }
func be64(b []byte) uint64         { return datafile.BE64(b) }
