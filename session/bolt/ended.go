package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/bffgate/bffgate/internal/boltfault"
	"github.com/bffgate/bffgate/internal/datafile"
	"github.com/bffgate/bffgate/session"
)

// Ended remembers ended sids and subjects for the cookie store, which
// cannot find the cookies it has handed out: a back-channel logout (or a
// Delete) is recorded here until every session it could apply to has
// passed its absolute expiry, and the cookie store refuses the sessions it
// matches. It satisfies cookie.EndedStore.
//
// Records live in the buckets sessions/ended_sid and sessions/ended_sub of
// the shared data file, created on the first write. Ended is safe for
// concurrent use; it does not own the *bbolt.DB.
//
// The cookie store asks on every request, and the answer is nearly always
// "not ended", so Ended remembers those answers until its next write: a
// bbolt file is open in one process only, and its ended records are
// written through this value, so nothing else can make a remembered
// answer stale. Use one Ended per data file.
type Ended struct {
	db    *bbolt.DB
	bk    datafile.SessionBuckets
	probe *boltfault.Probe

	// gen counts writes; a remembered answer holds while gen is what it
	// was before the answer's read.
	gen  atomic.Uint64
	mu   sync.Mutex
	live map[endedKey]uint64 // not ended, as of that gen
}

type endedKey struct {
	sid, sub string
	created  int64
}

// endedCacheMax bounds the remembered answers (one per live cookie
// session asking); past it the memory starts over.
const endedCacheMax = 16384

// NewEnded returns an Ended on db.
func NewEnded(db *bbolt.DB) *Ended { return NewEndedIn(db, "") }

// NewEndedIn is NewEnded on the buckets of namespace (datafile.Sessions):
// a frontend's logouts end only its own cookie sessions.
func NewEndedIn(db *bbolt.DB, namespace string) *Ended {
	bk := datafile.Sessions(namespace)
	return &Ended{db: db, bk: bk, probe: boltfault.NewProbe(db, bk.EndedHealth, nil), live: map[endedKey]uint64{}}
}

// Ended reports whether a session with the given sid and subject, created
// at created, has been ended: its sid was ended, or its subject was ended
// at or after created. Empty sid or sub match nothing. An expired record
// that the sweeper has not removed yet still counts; it can only match
// sessions that have expired themselves.
func (e *Ended) Ended(ctx context.Context, sid, sub string, created time.Time) (bool, error) {
	if sid == "" && sub == "" {
		return false, nil
	}
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("session/bolt: ended: %w", err)
	}
	key := endedKey{sid: sid, sub: sub, created: created.UnixNano()}
	// Loaded before the read: a write that commits after it bumps gen
	// (writes bump it after their commit), so an answer the read gives
	// without that write is not remembered past it.
	gen := e.gen.Load()
	e.mu.Lock()
	g, ok := e.live[key]
	e.mu.Unlock()
	if ok && g == gen {
		return false, nil
	}
	ended := false
	err := e.db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(e.bk.EndedSID); sid != "" && b != nil && b.Get([]byte(sid)) != nil {
			ended = true
			return nil
		}
		if b := tx.Bucket(e.bk.EndedSub); sub != "" && b != nil {
			if v := b.Get([]byte(sub)); len(v) == 16 {
				since := int64(binary.BigEndian.Uint64(v[:8]))
				ended = datafile.Nanos(created) <= uint64(since)
			}
		}
		return nil
	})
	if err != nil {
		return false, wrapErr(e.db, "ended", err)
	}
	if !ended {
		e.mu.Lock()
		if len(e.live) >= endedCacheMax {
			clear(e.live)
		}
		e.live[key] = gen
		e.mu.Unlock()
	}
	return ended, nil
}

// Ping reads the data file, past the remembered answers, and checks that
// it can be written (boltfault.Probe, reused for a second): readiness must
// notice a file that can no longer be read, and a full disk, on which a
// logout could not be recorded.
func (e *Ended) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("session/bolt: ping: %w", err)
	}
	if err := e.db.View(func(*bbolt.Tx) error { return nil }); err != nil {
		return wrapErr(e.db, "ping", err)
	}
	if err := e.probe.Check(ctx); err != nil {
		return fmt.Errorf("session/bolt: ping: %w: %w", session.ErrUnavailable, err)
	}
	return nil
}

// wrote forgets every remembered answer; called after each committed write.
func (e *Ended) wrote() { e.gen.Add(1) }

// EndSID records that sessions carrying sid are ended, until until (the
// latest absolute expiry any of them can have).
func (e *Ended) EndSID(ctx context.Context, sid string, until time.Time) error {
	if sid == "" {
		return errors.New("session/bolt: end sid: empty sid; an ended sid must name one")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("session/bolt: end sid: %w", err)
	}
	defer e.wrote()
	return wrapErr(e.db, "end sid", e.db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(e.bk.EndedSID)
		if err != nil {
			return err
		}
		u := datafile.Nanos(until)
		if v := b.Get([]byte(sid)); len(v) == 8 && binary.BigEndian.Uint64(v) > u {
			return nil // already remembered for longer
		}
		return b.Put([]byte(sid), binary.BigEndian.AppendUint64(nil, u))
	}))
}

// EndSubject records that sessions of sub created at or before since are
// ended, until until. A later call widens the record (the later since and
// the later until win).
func (e *Ended) EndSubject(ctx context.Context, sub string, since, until time.Time) error {
	if sub == "" {
		return errors.New("session/bolt: end subject: empty subject; an ended subject must name one")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("session/bolt: end subject: %w", err)
	}
	defer e.wrote()
	return wrapErr(e.db, "end subject", e.db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(e.bk.EndedSub)
		if err != nil {
			return err
		}
		s, u := datafile.Nanos(since), datafile.Nanos(until)
		if v := b.Get([]byte(sub)); len(v) == 16 {
			s = max(s, binary.BigEndian.Uint64(v[:8]))
			u = max(u, binary.BigEndian.Uint64(v[8:]))
		}
		v := binary.BigEndian.AppendUint64(make([]byte, 0, 16), s)
		return b.Put([]byte(sub), binary.BigEndian.AppendUint64(v, u))
	}))
}

// Sweep removes the records whose until has passed at now and reports how
// many. It scans both buckets: they hold one record per logout within the
// session lifetime, far fewer than sessions.
func (e *Ended) Sweep(now time.Time) (int, error) {
	n := 0
	limit := datafile.Nanos(now)
	err := e.db.Update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{e.bk.EndedSID, e.bk.EndedSub} {
			b := tx.Bucket(name)
			if b == nil {
				continue
			}
			var dead [][]byte
			err := b.ForEach(func(k, v []byte) error {
				if len(v) < 8 || binary.BigEndian.Uint64(v[len(v)-8:]) <= limit {
					dead = append(dead, bytes.Clone(k))
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, k := range dead {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			n += len(dead)
		}
		return nil
	})
	if err != nil {
		return 0, wrapErr(e.db, "sweep ended", err)
	}
	return n, nil
}

// Run sweeps every interval (with time.Now) until ctx is done, logging
// failures to logger (nil: none); a failed sweep is retried at the next
// tick.
func (e *Ended) Run(ctx context.Context, interval time.Duration, logger *slog.Logger) {
	if interval <= 0 {
		interval = time.Minute
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if n, err := e.Sweep(time.Now()); err != nil {
			logger.Error("sweep of ended sessions failed; retrying at the next interval", "err", err)
		} else if n > 0 {
			logger.Debug("ended-session records swept", "removed", n)
		}
	}
}
