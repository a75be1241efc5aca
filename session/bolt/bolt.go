package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/bffgate/bffgate/internal/boltfault"
	"github.com/bffgate/bffgate/internal/datafile"
	"github.com/bffgate/bffgate/session"
	"github.com/bffgate/bffgate/session/codec"
	"github.com/bffgate/bffgate/session/tickets"
)

// Bucket names (internal/datafile owns the layout).
var (
	bucketRecords  = []byte(datafile.SessionRecords)
	bucketBySID    = []byte(datafile.SessionsBySID)
	bucketBySub    = []byte(datafile.SessionsBySub)
	bucketExpiry   = []byte(datafile.SessionExpiry)
	bucketEndedSID = []byte(datafile.SessionEndedSID)
	bucketEndedSub = []byte(datafile.SessionEndedSub)
)

// DefaultSweepBatch is how many expired sessions one sweep transaction
// removes when Config.SweepBatch is zero.
const DefaultSweepBatch = 1000

// DefaultSweepInterval is how often Run removes expired sessions, unless
// told otherwise.
const DefaultSweepInterval = 5 * time.Minute

// Config configures a Store.
type Config struct {
	// Now is the clock for every expiry decision; nil means time.Now.
	Now func() time.Time
	// Logger receives the sweeper's lines and refused tickets (at debug);
	// nil means no logging.
	Logger *slog.Logger
	// Registerer receives the store's metrics; nil means none.
	Registerer prometheus.Registerer
	// SweepBatch is how many expired sessions one sweep transaction
	// removes, so that a large sweep does not hold bbolt's writer lock for
	// long. Zero means DefaultSweepBatch.
	SweepBatch int
	// Namespace keeps the store's sessions apart from every other
	// namespace's in the same file (datafile.Sessions): a gateway
	// frontend's name. "" is the first release's buckets.
	Namespace string
}

// Store is a session.Store on a bbolt database: the rules of
// session/tickets on this package's Engine, and the sweeper of expired
// sessions. It is safe for concurrent use. It does not own the *bbolt.DB:
// the caller closes it.
type Store struct {
	*tickets.Store
	e     *Engine
	now   func() time.Time
	log   *slog.Logger
	batch int
	swept prometheus.Counter
}

var _ session.Store = (*Store)(nil)

// New returns a Store on db, creating its buckets when missing.
func New(db *bbolt.DB, cfg Config) (*Store, error) {
	if cfg.SweepBatch < 0 {
		return nil, fmt.Errorf("session/bolt: Config.SweepBatch is %d; it must be positive (or zero for %d)", cfg.SweepBatch, DefaultSweepBatch)
	}
	e, err := NewEngineIn(db, cfg.Namespace, cfg.Now)
	if err != nil {
		return nil, err
	}
	rules, err := tickets.New(e, tickets.Config{Name: "bolt", Now: cfg.Now, Logger: cfg.Logger, Registerer: cfg.Registerer})
	if err != nil {
		return nil, err
	}
	s := &Store{Store: rules, e: e, now: cfg.Now, log: cfg.Logger, batch: cfg.SweepBatch}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.batch == 0 {
		s.batch = DefaultSweepBatch
	}
	s.swept = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "bffgate_session_bolt_swept_total",
		Help: "Expired sessions removed from the bbolt store by the sweeper.",
	})
	if r := cfg.Registerer; r != nil {
		if err := r.Register(s.swept); err != nil {
			return nil, fmt.Errorf("session/bolt: register metrics (one bbolt session store per registry): %w", err)
		}
	}
	return s, nil
}

// Engine is the tickets.Engine on a bbolt database: records, the sid and
// subject indexes and the expiry index in the buckets "sessions/..." of
// the shared data file (see the package documentation). Every operation
// is one bbolt transaction, durable when it returns.
type Engine struct {
	db *bbolt.DB
	bk datafile.SessionBuckets
	// recs skips the read transaction for a record unchanged since it was
	// last read.
	recs *recCache
	// probe is Ping's write check of the data file.
	probe *boltfault.Probe
}

var _ tickets.Engine = (*Engine)(nil)

// NewEngine returns the Engine on db, creating its buckets when missing.
// now is the probe's clock (nil: time.Now).
func NewEngine(db *bbolt.DB, now func() time.Time) (*Engine, error) {
	return NewEngineIn(db, "", now)
}

// NewEngineIn is NewEngine on the buckets of namespace
// (datafile.Sessions).
func NewEngineIn(db *bbolt.DB, namespace string, now func() time.Time) (*Engine, error) {
	if db == nil {
		return nil, errors.New("session/bolt: New: db is nil; open the data file first (datafile.Open)")
	}
	bk := datafile.Sessions(namespace)
	e := &Engine{db: db, bk: bk, recs: newRecCache(recCacheMax), probe: boltfault.NewProbe(db, bk.Health, now)}
	err := db.Update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bk.Records, bk.BySID, bk.BySub, bk.Expiry} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, wrapErr(db, "create buckets", err)
	}
	return e, nil
}

// wrapErr adds context to an error from a transaction. Every fault of the
// data file (a full disk, an I/O error, a read-only filesystem, a closed
// database, a lock timeout: boltfault.Is) also matches
// session.ErrUnavailable, so callers answer 503 and keep the session; the
// message names the file, for the operator.
func wrapErr(db *bbolt.DB, op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("session/bolt: %w", datafile.Fault(db, op, session.ErrUnavailable, err))
}

type buckets struct {
	records, bySID, bySub, expiry *bbolt.Bucket
	// wrote is told the id of each record put or removed (nil in a
	// read-only transaction).
	wrote func(id []byte)
}

// open is the package's open with the record cache told of every record a
// write transaction changes, once it commits.
func (e *Engine) open(tx *bbolt.Tx) (buckets, error) {
	b, err := open(tx, e.bk)
	if tx.Writable() {
		b.wrote = func(id []byte) {
			id = bytes.Clone(id)
			tx.OnCommit(func() { e.recs.forget(id) })
		}
	}
	return b, err
}

func open(tx *bbolt.Tx, bk datafile.SessionBuckets) (buckets, error) {
	b := buckets{
		records: tx.Bucket(bk.Records),
		bySID:   tx.Bucket(bk.BySID),
		bySub:   tx.Bucket(bk.BySub),
		expiry:  tx.Bucket(bk.Expiry),
	}
	if b.records == nil || b.bySID == nil || b.bySub == nil || b.expiry == nil {
		return b, errors.New("the sessions/ buckets are missing from the data file; was it replaced while running?")
	}
	return b, nil
}

func (b buckets) index(ix tickets.Index) (*bbolt.Bucket, error) {
	switch ix {
	case tickets.BySID:
		return b.bySID, nil
	case tickets.BySubject:
		return b.bySub, nil
	}
	return nil, fmt.Errorf("unknown index %d", ix)
}

var empty = []byte{}

// put writes a record and its index entries.
func (b buckets) put(id, rec []byte, m codec.Meta) error {
	if err := b.records.Put(id, rec); err != nil {
		return err
	}
	if b.wrote != nil {
		b.wrote(id)
	}
	if m.SID != "" {
		if err := b.bySID.Put(datafile.SessionIndexKey(m.SID, id), empty); err != nil {
			return err
		}
	}
	if m.Subject != "" {
		if err := b.bySub.Put(datafile.SessionIndexKey(m.Subject, id), empty); err != nil {
			return err
		}
	}
	if !m.ExpiresAt.IsZero() {
		return b.expiry.Put(datafile.SessionExpiryKey(m.ExpiresAt, id), empty)
	}
	return nil
}

// remove deletes a record and the index entries that m names.
func (b buckets) remove(id []byte, m codec.Meta) error {
	if err := b.records.Delete(id); err != nil {
		return err
	}
	if b.wrote != nil {
		b.wrote(id)
	}
	if m.SID != "" {
		if err := b.bySID.Delete(datafile.SessionIndexKey(m.SID, id)); err != nil {
			return err
		}
	}
	if m.Subject != "" {
		if err := b.bySub.Delete(datafile.SessionIndexKey(m.Subject, id)); err != nil {
			return err
		}
	}
	if !m.ExpiresAt.IsZero() {
		return b.expiry.Delete(datafile.SessionExpiryKey(m.ExpiresAt, id))
	}
	return nil
}

// Get returns the record under id, from the record cache when no write
// has changed it since it was last read. The record may be shared with
// the cache: the caller must not change it (the rules only open it).
func (e *Engine) Get(ctx context.Context, id []byte) ([]byte, error) {
	rec, gen := e.recs.get(id)
	if rec != nil {
		return rec, nil
	}
	err := e.db.View(func(tx *bbolt.Tx) error {
		b, err := e.open(tx)
		if err != nil {
			return err
		}
		if v := b.records.Get(id); v != nil {
			rec = bytes.Clone(v) // v lives in the memory map only during the transaction
		}
		return nil
	})
	if err != nil {
		return nil, wrapErr(e.db, "read", err)
	}
	if rec != nil {
		e.recs.put(id, rec, gen)
	}
	return rec, nil
}

// Create writes the record and its index entries in one transaction.
func (e *Engine) Create(ctx context.Context, id, rec []byte, m codec.Meta) error {
	err := e.db.Update(func(tx *bbolt.Tx) error {
		b, err := e.open(tx)
		if err != nil {
			return err
		}
		if b.records.Get(id) != nil {
			return tickets.ErrExists
		}
		return b.put(id, rec, m)
	})
	if errors.Is(err, tickets.ErrExists) {
		return err
	}
	return wrapErr(e.db, "create", err)
}

// errKeep rolls back a transaction whose function changed nothing: a
// commit would cost an fsync for nothing.
var errKeep = errors.New("keep")

// fnError carries the function's error out of the transaction unchanged.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// Update runs fn inside one write transaction, so concurrent Updates of
// one record are serialised and none is lost; fn holds bbolt's single
// writer lock while it runs.
func (e *Engine) Update(ctx context.Context, id []byte, fn func(rec []byte) (tickets.Change, error)) error {
	err := e.db.Update(func(tx *bbolt.Tx) error {
		b, err := e.open(tx)
		if err != nil {
			return err
		}
		var rec []byte
		if v := b.records.Get(id); v != nil {
			rec = bytes.Clone(v)
		}
		c, err := fn(rec)
		if err != nil {
			return fnError{err}
		}
		switch c.Op {
		case tickets.Keep:
			return errKeep
		case tickets.Remove:
			return b.remove(id, c.Old)
		case tickets.Put:
			if err := b.remove(id, c.Old); err != nil {
				return err
			}
			return b.put(id, c.Record, c.Meta)
		}
		return fmt.Errorf("unknown change %d", c.Op)
	})
	var fe fnError
	switch {
	case errors.Is(err, errKeep):
		return nil
	case errors.As(err, &fe):
		return fe.err
	}
	return wrapErr(e.db, "update", err)
}

// End removes the sessions that ix lists under v, in one transaction.
func (e *Engine) End(ctx context.Context, ix tickets.Index, v string, match func(codec.Meta) bool) ([]codec.Meta, error) {
	var ended []codec.Meta
	err := e.db.Update(func(tx *bbolt.Tx) error {
		ended = ended[:0]
		b, err := e.open(tx)
		if err != nil {
			return err
		}
		index, err := b.index(ix)
		if err != nil {
			return err
		}
		prefix := datafile.SessionIndexPrefix(v)
		var ids, keys [][]byte
		c := index.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if len(k) != len(prefix)+codec.TicketIDSize {
				continue // a longer value's key, impossible with the length prefix, but cheap to check
			}
			ids = append(ids, bytes.Clone(k[len(prefix):]))
			keys = append(keys, bytes.Clone(k))
		}
		for i, id := range ids {
			rec := b.records.Get(id)
			var m codec.Meta
			if rec != nil {
				if m, err = codec.ParseMeta(rec); err != nil {
					return fmt.Errorf("record %x: %w", id, err)
				}
			}
			if rec == nil || !match(m) {
				if err := index.Delete(keys[i]); err != nil { // a stale entry
					return err
				}
				continue
			}
			if err := b.remove(id, m); err != nil {
				return err
			}
			ended = append(ended, m)
		}
		return nil
	})
	if err != nil {
		return nil, wrapErr(e.db, "end sessions", err)
	}
	return ended, nil
}

// Ping reports whether the data file is open, holds the store's buckets
// and can be written (boltfault.Probe, reused for a second).
func (e *Engine) Ping(ctx context.Context) error {
	err := e.db.View(func(tx *bbolt.Tx) error {
		_, err := open(tx, e.bk)
		return err
	})
	if err != nil {
		return wrapErr(e.db, "ping", err)
	}
	if err := e.probe.Check(ctx); err != nil {
		return fmt.Errorf("session/bolt: ping: %w: %w", session.ErrUnavailable, err)
	}
	return nil
}

// Sweep removes every session expired at now, with its index entries, in
// transactions of at most Config.SweepBatch sessions, and reports how many
// it removed. It visits only the expiry index's expired prefix.
func (s *Store) Sweep(now time.Time) (int, error) {
	total := 0
	limit := datafile.SessionExpiryKey(now, nil) // keys <= limit (with any id) are expired
	// Look before taking the writer lock: most sweeps find nothing, and an
	// empty write transaction still syncs the file.
	due := false
	err := s.e.db.View(func(tx *bbolt.Tx) error {
		b, err := open(tx, s.e.bk)
		if err != nil {
			return err
		}
		k, _ := b.expiry.Cursor().First()
		due = k != nil && (len(k) < 8 || bytes.Compare(k[:8], limit) <= 0)
		return nil
	})
	if err != nil || !due {
		return 0, wrapErr(s.e.db, "sweep", err)
	}
	for {
		n, more, err := s.sweepBatch(limit)
		total += n
		s.swept.Add(float64(n))
		if err != nil {
			return total, wrapErr(s.e.db, "sweep", err)
		}
		if !more {
			return total, nil
		}
	}
}

func (s *Store) sweepBatch(limit []byte) (n int, more bool, err error) {
	err = s.e.db.Update(func(tx *bbolt.Tx) error {
		b, err := s.e.open(tx)
		if err != nil {
			return err
		}
		var keys [][]byte
		c := b.expiry.Cursor()
		for k, _ := c.First(); k != nil && (len(k) < 8 || bytes.Compare(k[:8], limit) <= 0); k, _ = c.Next() {
			if len(keys) == s.batch {
				more = true
				break
			}
			keys = append(keys, bytes.Clone(k))
		}
		for _, k := range keys {
			if len(k) != 8+codec.TicketIDSize {
				if err := b.expiry.Delete(k); err != nil {
					return err
				}
				continue
			}
			id := k[8:]
			rec := b.records.Get(id)
			if rec == nil {
				if err := b.expiry.Delete(k); err != nil {
					return err
				}
				continue
			}
			m, err := codec.ParseMeta(rec)
			if err != nil {
				// Not a record this store wrote: drop it rather than
				// keep a record nothing can open or sweep.
				s.log.Warn("removing a session record with an unreadable header", "id", fmt.Sprintf("%x", id), "err", err)
				if err := b.records.Delete(id); err != nil {
					return err
				}
				b.wrote(id)
				if err := b.expiry.Delete(k); err != nil {
					return err
				}
				n++
				continue
			}
			if !bytes.Equal(datafile.SessionExpiryKey(m.ExpiresAt, id), k) {
				if err := b.expiry.Delete(k); err != nil { // a stale entry
					return err
				}
				continue
			}
			if err := b.remove(id, m); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, false, err
	}
	return n, more, nil
}

// Run sweeps every interval until ctx is done, logging what it removed
// and any error (a failed sweep is retried at the next tick).
func (s *Store) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Minute
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		n, err := s.Sweep(s.now())
		if err != nil {
			s.log.Error("session sweep failed; retrying at the next interval", "err", err, "removed", n)
			continue
		}
		if n > 0 {
			s.log.Info("expired sessions swept", "removed", n)
		}
	}
}

// Purge deletes the sessions of a named namespace (a removed frontend's
// records and indexes) and reports how many it held. The classic
// namespace "" is never purged.
//
// The namespace's ended records (Ended: the cookie store's logouts) stay:
// a cookie session lives in the browser, not here, so a frontend of that
// name added again later (same cookie keys) would otherwise accept again
// the cookies its users had logged out of. A cookie store of the namespace
// opened again sweeps them once they have expired.
func Purge(db *bbolt.DB, namespace string) (int, error) {
	if namespace == "" {
		return 0, errors.New("session/bolt: purge: the classic namespace cannot be purged")
	}
	bk := datafile.Sessions(namespace)
	n := 0
	err := db.Update(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(bk.Records); b != nil {
			n = b.Stats().KeyN
		}
		for _, name := range [][]byte{bk.Records, bk.BySID, bk.BySub, bk.Expiry, []byte(bk.Health)} {
			if err := tx.DeleteBucket(name); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
				return err
			}
		}
		return nil
	})
	return n, wrapErr(db, "purge namespace", err)
}
