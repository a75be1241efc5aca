package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bbolt "go.etcd.io/bbolt"

	"github.com/bffgate/bffgate/internal/boltfault"
	"github.com/bffgate/bffgate/session"
	"github.com/bffgate/bffgate/session/codec"
)

// Bucket names; see the package documentation.
var (
	bucketRecords  = []byte("sessions/records")
	bucketBySID    = []byte("sessions/by_sid")
	bucketBySub    = []byte("sessions/by_sub")
	bucketExpiry   = []byte("sessions/expiry")
	bucketEndedSID = []byte("sessions/ended_sid")
	bucketEndedSub = []byte("sessions/ended_sub")
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
}

// Store is a session.Store on a bbolt database. It is safe for concurrent
// use. It does not own the *bbolt.DB: the caller closes it.
type Store struct {
	db    *bbolt.DB
	now   func() time.Time
	log   *slog.Logger
	batch int

	ops   *prometheus.CounterVec
	swept prometheus.Counter
	// opened skips decrypting and decoding an unchanged record on Get.
	opened *codec.OpenCache
	// recs skips the read transaction for a record unchanged since it was
	// last read.
	recs *recCache
	// probe is Ping's write check of the data file.
	probe *boltfault.Probe
}

var _ session.Store = (*Store)(nil)

// New returns a Store on db, creating its buckets when missing.
func New(db *bbolt.DB, cfg Config) (*Store, error) {
	if db == nil {
		return nil, errors.New("session/bolt: New: db is nil; open the data file first")
	}
	if cfg.SweepBatch < 0 {
		return nil, fmt.Errorf("session/bolt: Config.SweepBatch is %d; it must be positive (or zero for %d)", cfg.SweepBatch, DefaultSweepBatch)
	}
	s := &Store{db: db, now: cfg.Now, log: cfg.Logger, batch: cfg.SweepBatch, opened: codec.NewOpenCache(0), recs: newRecCache(recCacheMax)}
	if s.now == nil {
		s.now = time.Now
	}
	s.probe = boltfault.NewProbe(db, "sessions/health", s.now)
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.batch == 0 {
		s.batch = DefaultSweepBatch
	}
	s.ops = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bffgate_session_bolt_operations_total",
		Help: "Session store operations on the bbolt store, by operation and result (ok, not_found, error).",
	}, []string{"op", "result"})
	s.swept = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "bffgate_session_bolt_swept_total",
		Help: "Expired sessions removed from the bbolt store by the sweeper.",
	})
	if r := cfg.Registerer; r != nil {
		for _, c := range []prometheus.Collector{s.ops, s.swept} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("session/bolt: register metrics (one bbolt session store per registry): %w", err)
			}
		}
	}
	err := db.Update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketRecords, bucketBySID, bucketBySub, bucketExpiry} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, wrapErr("create buckets", err)
	}
	return s, nil
}

// wrapErr adds context to an error from a transaction. Every fault of the
// data file (a full disk, an I/O error, a read-only filesystem, a closed
// database, a lock timeout: boltfault.Is) also matches
// session.ErrUnavailable, so callers answer 503 and keep the session.
func wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if boltfault.Is(err) {
		return fmt.Errorf("session/bolt: %s: %w: %w", op, session.ErrUnavailable, err)
	}
	return fmt.Errorf("session/bolt: %s: %w", op, err)
}

// callbackError carries fn's error out of a transaction unchanged.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

// errNoSession is returned inside a transaction for "no live session"; the
// methods turn it into an error wrapping session.ErrNotFound.
var errNoSession = errors.New("no live session")

func notFound(why string) error {
	return fmt.Errorf("%w: %s", session.ErrNotFound, why)
}

func (s *Store) count(op string, err error) {
	switch {
	case err == nil:
		s.ops.WithLabelValues(op, "ok").Inc()
	case errors.Is(err, session.ErrNotFound):
		s.ops.WithLabelValues(op, "not_found").Inc()
	default:
		s.ops.WithLabelValues(op, "error").Inc()
	}
}

type buckets struct {
	records, bySID, bySub, expiry *bbolt.Bucket
	// wrote is told the id of each record put or removed (nil in a
	// read-only transaction).
	wrote func(id []byte)
}

// open is the package's open with the record cache told of every record a
// write transaction changes, once it commits.
func (s *Store) open(tx *bbolt.Tx) (buckets, error) {
	b, err := open(tx)
	if tx.Writable() {
		b.wrote = func(id []byte) {
			id = bytes.Clone(id)
			tx.OnCommit(func() { s.recs.forget(id) })
		}
	}
	return b, err
}

func open(tx *bbolt.Tx) (buckets, error) {
	b := buckets{
		records: tx.Bucket(bucketRecords),
		bySID:   tx.Bucket(bucketBySID),
		bySub:   tx.Bucket(bucketBySub),
		expiry:  tx.Bucket(bucketExpiry),
	}
	if b.records == nil || b.bySID == nil || b.bySub == nil || b.expiry == nil {
		return b, errors.New("the sessions/ buckets are missing from the data file; was it replaced while running?")
	}
	return b, nil
}

// indexKey is uvarint(len(v)) | v | id: the length prefix keeps one
// value's keys from matching another value that extends it.
func indexKey(v string, id []byte) []byte {
	k := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(v)+len(id)), uint64(len(v)))
	k = append(k, v...)
	return append(k, id...)
}

func indexPrefix(v string) []byte {
	k := binary.AppendUvarint(nil, uint64(len(v)))
	return append(k, v...)
}

// nanos is t in Unix nanoseconds, clamped to [0, MaxInt64] so that it
// sorts as unsigned big-endian bytes.
func nanos(t time.Time) uint64 {
	switch {
	case t.Before(time.Unix(0, 0)):
		return 0
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return uint64(t.UnixNano())
}

func expiryKey(at time.Time, id []byte) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(id)), nanos(at))
	return append(k, id...)
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
		if err := b.bySID.Put(indexKey(m.SID, id), empty); err != nil {
			return err
		}
	}
	if m.Subject != "" {
		if err := b.bySub.Put(indexKey(m.Subject, id), empty); err != nil {
			return err
		}
	}
	if !m.ExpiresAt.IsZero() {
		return b.expiry.Put(expiryKey(m.ExpiresAt, id), empty)
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
		if err := b.bySID.Delete(indexKey(m.SID, id)); err != nil {
			return err
		}
	}
	if m.Subject != "" {
		if err := b.bySub.Delete(indexKey(m.Subject, id)); err != nil {
			return err
		}
	}
	if !m.ExpiresAt.IsZero() {
		return b.expiry.Delete(expiryKey(m.ExpiresAt, id))
	}
	return nil
}

// Create seals s under a fresh ticket and stores it. s.ID is ignored: the
// ticket's id is the session's identity.
func (s *Store) Create(ctx context.Context, sess *session.Session) (string, error) {
	h, err := s.create(ctx, sess)
	s.count("create", err)
	return h, err
}

func (s *Store) create(ctx context.Context, sess *session.Session) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("session/bolt: create: %w", err)
	}
	now := s.now()
	tk, rec, err := codec.SealNew(sess, now)
	if err != nil {
		return "", fmt.Errorf("session/bolt: create: %w", err)
	}
	id := tk.IDBytes()
	err = s.db.Update(func(tx *bbolt.Tx) error {
		b, err := s.open(tx)
		if err != nil {
			return err
		}
		if b.records.Get(id) != nil {
			// 2^-128: only a broken random source gets here.
			return errors.New("a record already exists under the new ticket id; is crypto/rand working?")
		}
		return b.put(id, rec, codec.MetaOf(sess))
	})
	if err != nil {
		return "", wrapErr("create", err)
	}
	return tk.Handle(), nil
}

// Get opens the session that handle names.
func (s *Store) Get(ctx context.Context, handle string) (*session.Session, error) {
	sess, err := s.get(ctx, handle)
	s.count("get", err)
	return sess, err
}

func (s *Store) get(ctx context.Context, handle string) (*session.Session, error) {
	tk, err := codec.ParseTicket(handle)
	if err != nil {
		return nil, notFound("the handle is not a ticket")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("session/bolt: get: %w", err)
	}
	id := tk.IDBytes()
	rec, gen := s.recs.get(id)
	if rec == nil {
		err = s.db.View(func(tx *bbolt.Tx) error {
			b, err := s.open(tx)
			if err != nil {
				return err
			}
			if v := b.records.Get(id); v != nil {
				rec = bytes.Clone(v) // v lives in the memory map only during the transaction
			}
			return nil
		})
		if err != nil {
			return nil, wrapErr("get", err)
		}
		if rec == nil {
			return nil, notFound("no record under the ticket id")
		}
		s.recs.put(id, rec, gen)
	}
	sess, err := s.opened.Open(tk, rec)
	if err != nil {
		s.log.Debug("session ticket does not open its record", "ticket", tk, "err", err)
		return nil, notFound("the ticket does not open its record")
	}
	if sess.Expired(s.now()) {
		return nil, notFound("the session has expired")
	}
	return sess, nil
}

// Update opens, changes and reseals the session in one write transaction.
// It returns handle unchanged.
func (s *Store) Update(ctx context.Context, handle string, fn func(*session.Session) error) (string, error) {
	err := s.update(ctx, handle, fn)
	s.count("update", err)
	if err != nil {
		return "", err
	}
	return handle, nil
}

func (s *Store) update(ctx context.Context, handle string, fn func(*session.Session) error) error {
	tk, err := codec.ParseTicket(handle)
	if err != nil {
		return notFound("the handle is not a ticket")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("session/bolt: update: %w", err)
	}
	id := tk.IDBytes()
	var why string
	err = s.db.Update(func(tx *bbolt.Tx) error {
		b, err := s.open(tx)
		if err != nil {
			return err
		}
		v := b.records.Get(id)
		if v == nil {
			why = "no record under the ticket id"
			return errNoSession
		}
		sess, err := codec.Open(tk, v)
		if err != nil {
			why = "the ticket does not open its record"
			return errNoSession
		}
		oldMeta := codec.MetaOf(sess)
		now := s.now()
		if sess.Expired(now) {
			// Removed, and the removal committed: returning an error here
			// would roll it back. update reports why afterwards.
			why = "the session has expired"
			return b.remove(id, oldMeta)
		}
		version := sess.Version
		if err := fn(sess); err != nil {
			return callbackError{err}
		}
		sess.Version = version + 1
		if sess.Expired(now) {
			// fn ended the session (e.g. moved AbsoluteExpiry back): it
			// is gone, as any expired session.
			why = "the update left the session expired"
			return b.remove(id, oldMeta)
		}
		rec, err := codec.Seal(tk, sess)
		if err != nil {
			return err
		}
		if err := b.remove(id, oldMeta); err != nil {
			return err
		}
		return b.put(id, rec, codec.MetaOf(sess))
	})
	var cb callbackError
	switch {
	case err == nil && why != "":
		return notFound(why) // the session was removed, as expired
	case err == nil:
		return nil
	case errors.As(err, &cb):
		return cb.err
	case errors.Is(err, errNoSession):
		return notFound(why)
	}
	return wrapErr("update", err)
}

// Delete removes the session. A handle that names no record, or whose key
// does not open it, deletes nothing and is no error.
func (s *Store) Delete(ctx context.Context, handle string) error {
	err := s.delete(ctx, handle)
	s.count("delete", err)
	return err
}

func (s *Store) delete(ctx context.Context, handle string) error {
	tk, err := codec.ParseTicket(handle)
	if err != nil {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("session/bolt: delete: %w", err)
	}
	id := tk.IDBytes()
	return wrapErr("delete", s.db.Update(func(tx *bbolt.Tx) error {
		b, err := s.open(tx)
		if err != nil {
			return err
		}
		v := b.records.Get(id)
		if v == nil {
			return nil
		}
		// Only the key's holder may delete: a guessed id with a wrong key
		// must not end someone else's session.
		if _, err := codec.Open(tk, v); err != nil {
			return nil
		}
		m, err := codec.ParseMeta(v) // authenticated by Open
		if err != nil {
			return err
		}
		return b.remove(id, m)
	}))
}

// EndBySID ends every session whose sid is sid and reports how many were
// live. An empty sid ends nothing.
func (s *Store) EndBySID(ctx context.Context, sid string) (int, error) {
	n, err := s.endBy(ctx, "end_sid", bucketBySID, sid)
	s.count("end_sid", err)
	return n, err
}

// EndBySubject ends every session whose subject is sub and reports how
// many were live. An empty sub ends nothing.
func (s *Store) EndBySubject(ctx context.Context, sub string) (int, error) {
	n, err := s.endBy(ctx, "end_subject", bucketBySub, sub)
	s.count("end_subject", err)
	return n, err
}

func (s *Store) endBy(ctx context.Context, op string, index []byte, v string) (int, error) {
	if v == "" {
		return 0, nil
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("session/bolt: %s: %w", op, err)
	}
	now := s.now()
	n := 0
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b, err := s.open(tx)
		if err != nil {
			return err
		}
		prefix := indexPrefix(v)
		var ids, stale [][]byte
		c := tx.Bucket(index).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if len(k) != len(prefix)+codec.TicketIDSize {
				continue // a longer value's key, impossible with the length prefix, but cheap to check
			}
			ids = append(ids, bytes.Clone(k[len(prefix):]))
			stale = append(stale, bytes.Clone(k))
		}
		for i, id := range ids {
			rec := b.records.Get(id)
			if rec == nil {
				if err := tx.Bucket(index).Delete(stale[i]); err != nil {
					return err
				}
				continue
			}
			m, err := codec.ParseMeta(rec)
			if err != nil {
				return fmt.Errorf("record %x: %w", id, err)
			}
			if err := b.remove(id, m); err != nil {
				return err
			}
			if m.ExpiresAt.IsZero() || now.Before(m.ExpiresAt) {
				n++
			}
		}
		return nil
	})
	if err != nil {
		return 0, wrapErr(op, err)
	}
	if n > 0 {
		s.log.Info("sessions ended", "by", op, "count", n)
	}
	return n, nil
}

// Ping reports whether the data file is open, holds the store's buckets
// and can be written: a session store that can read but not write (a full
// disk) cannot save a refresh or a login, so it is not ready. The write
// check (boltfault.Probe) is reused for a second.
func (s *Store) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("session/bolt: ping: %w", err)
	}
	err := s.db.View(func(tx *bbolt.Tx) error {
		_, err := open(tx)
		return err
	})
	if err == nil {
		if err = s.probe.Check(ctx); err != nil {
			return fmt.Errorf("session/bolt: ping: %w: %w", session.ErrUnavailable, err)
		}
	}
	return wrapErr("ping", err)
}

// Sweep removes every session expired at now, with its index entries, in
// transactions of at most Config.SweepBatch sessions, and reports how many
// it removed. It visits only the expiry index's expired prefix.
func (s *Store) Sweep(now time.Time) (int, error) {
	total := 0
	limit := expiryKey(now, nil) // keys <= limit (with any id) are expired
	// Look before taking the writer lock: most sweeps find nothing, and an
	// empty write transaction still syncs the file.
	due := false
	err := s.db.View(func(tx *bbolt.Tx) error {
		b, err := s.open(tx)
		if err != nil {
			return err
		}
		k, _ := b.expiry.Cursor().First()
		due = k != nil && (len(k) < 8 || bytes.Compare(k[:8], limit) <= 0)
		return nil
	})
	if err != nil || !due {
		return 0, wrapErr("sweep", err)
	}
	for {
		n, more, err := s.sweepBatch(limit)
		total += n
		s.swept.Add(float64(n))
		if err != nil {
			return total, wrapErr("sweep", err)
		}
		if !more {
			return total, nil
		}
	}
}

func (s *Store) sweepBatch(limit []byte) (n int, more bool, err error) {
	err = s.db.Update(func(tx *bbolt.Tx) error {
		b, err := s.open(tx)
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
			if !bytes.Equal(expiryKey(m.ExpiresAt, id), k) {
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
