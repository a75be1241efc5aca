package tickets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bffgate/bffgate/session"
	"github.com/bffgate/bffgate/session/codec"
)

// Config configures a Store.
type Config struct {
	// Name is the engine's name: it prefixes errors ("session/<name>: ")
	// and names the metric bffgate_session_<name>_operations_total.
	// Required.
	Name string
	// Now is the clock for every expiry decision; nil means time.Now.
	Now func() time.Time
	// Logger receives ended sessions (info) and refused tickets (debug);
	// nil means no logging.
	Logger *slog.Logger
	// Registerer receives the store's metrics; nil means none.
	Registerer prometheus.Registerer
}

// Store is a session.Store on an Engine: every rule of the server-side
// stores, written once. It is safe for concurrent use.
type Store struct {
	e    Engine
	name string
	now  func() time.Time
	log  *slog.Logger
	ops  *prometheus.CounterVec
	// counters holds the ops counter of each (op, result) seen, bound
	// once: WithLabelValues hashed both labels on every Get, that is on
	// every proxied request with a session.
	counters sync.Map // [2]string -> prometheus.Counter
	// opened skips decrypting and decoding an unchanged record on Get.
	opened *codec.OpenCache
}

var _ session.Store = (*Store)(nil)

// New returns the Store on e.
func New(e Engine, cfg Config) (*Store, error) {
	if e == nil {
		return nil, errors.New("session/tickets: New: engine is nil")
	}
	if cfg.Name == "" {
		return nil, errors.New("session/tickets: Config.Name is empty; name the engine (bolt, redis)")
	}
	s := &Store{e: e, name: cfg.Name, now: cfg.Now, log: cfg.Logger, opened: codec.NewOpenCache(0)}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.ops = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bffgate_session_" + cfg.Name + "_operations_total",
		Help: "Session store operations on the " + cfg.Name + " store, by operation and result (ok, not_found, unavailable, error).",
	}, []string{"op", "result"})
	if r := cfg.Registerer; r != nil {
		if err := r.Register(s.ops); err != nil {
			return nil, fmt.Errorf("session/%s: register metrics (one %s session store per registry): %w", cfg.Name, cfg.Name, err)
		}
	}
	return s, nil
}

func (s *Store) count(op string, err error) {
	result := "ok"
	switch {
	case err == nil:
	case errors.Is(err, session.ErrNotFound):
		result = "not_found"
	case errors.Is(err, session.ErrUnavailable):
		result = "unavailable"
	default:
		result = "error"
	}
	k := [2]string{op, result} // fixed strings: an operation's name, a result above
	c, ok := s.counters.Load(k)
	if !ok {
		c, _ = s.counters.LoadOrStore(k, s.ops.WithLabelValues(op, result))
	}
	c.(prometheus.Counter).Inc()
}

func notFound(why string) error {
	return fmt.Errorf("%w: %s", session.ErrNotFound, why)
}

func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("session/%s: %s: %w", s.name, op, err)
}

// callbackError carries the caller's error out of the engine unchanged.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

// Create seals sess under a fresh ticket and stores it. sess.ID is
// ignored: the ticket's id is the session's identity.
func (s *Store) Create(ctx context.Context, sess *session.Session) (string, error) {
	h, err := s.create(ctx, sess)
	s.count("create", err)
	return h, err
}

func (s *Store) create(ctx context.Context, sess *session.Session) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", s.wrap("create", err)
	}
	tk, rec, err := codec.SealNew(sess, s.now())
	if err != nil {
		return "", s.wrap("create", err)
	}
	err = s.e.Create(ctx, tk.IDBytes(), rec, codec.MetaOf(sess))
	if errors.Is(err, ErrExists) {
		// 2^-128: only a broken random source gets here.
		return "", s.wrap("create", fmt.Errorf("%w; is crypto/rand working?", err))
	}
	if err != nil {
		return "", s.wrap("create", err)
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
		return nil, s.wrap("get", err)
	}
	rec, err := s.e.Get(ctx, tk.IDBytes())
	if err != nil {
		return nil, s.wrap("get", err)
	}
	if rec == nil {
		return nil, notFound("no record under the ticket id")
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

// Update opens, changes and reseals the session in one atomic step of the
// engine, and returns handle unchanged. A session found expired, or left
// expired by fn, is removed (and the removal kept) and Update answers not
// found.
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
		return s.wrap("update", err)
	}
	var why string // reset on every run: an engine may run the function again
	err = s.e.Update(ctx, tk.IDBytes(), func(rec []byte) (Change, error) {
		why = ""
		if rec == nil {
			why = "no record under the ticket id"
			return Change{}, nil
		}
		sess, err := codec.Open(tk, rec)
		if err != nil {
			why = "the ticket does not open its record"
			return Change{}, nil
		}
		old := codec.MetaOf(sess)
		now := s.now()
		if sess.Expired(now) {
			why = "the session has expired"
			return Change{Op: Remove, Old: old}, nil
		}
		version := sess.Version
		if err := fn(sess); err != nil {
			return Change{}, callbackError{err}
		}
		sess.Version = version + 1
		if sess.Expired(now) {
			// fn ended the session (e.g. moved AbsoluteExpiry back): it
			// is gone, as any expired session.
			why = "the update left the session expired"
			return Change{Op: Remove, Old: old}, nil
		}
		next, err := codec.Seal(tk, sess)
		if err != nil {
			return Change{}, err
		}
		return Change{Op: Put, Record: next, Meta: codec.MetaOf(sess), Old: old}, nil
	})
	var cb callbackError
	switch {
	case errors.As(err, &cb):
		return cb.err
	case err != nil:
		return s.wrap("update", err)
	case why != "":
		return notFound(why)
	}
	return nil
}

// Delete removes the session. A handle that names no record, or whose key
// does not open it, deletes nothing and is no error: only the key's holder
// may delete, so a guessed id with a wrong key ends no one's session.
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
		return s.wrap("delete", err)
	}
	err = s.e.Update(ctx, tk.IDBytes(), func(rec []byte) (Change, error) {
		if rec == nil {
			return Change{}, nil
		}
		if _, err := codec.Open(tk, rec); err != nil {
			return Change{}, nil
		}
		m, err := codec.ParseMeta(rec) // authenticated by Open
		if err != nil {
			return Change{}, err
		}
		return Change{Op: Remove, Old: m}, nil
	})
	s.opened.Forget(tk)
	return s.wrap("delete", err)
}

// EndBySID ends every session whose sid is sid and reports how many were
// live. An empty sid ends nothing.
func (s *Store) EndBySID(ctx context.Context, sid string) (int, error) {
	n, err := s.endBy(ctx, "end_sid", BySID, sid, func(m codec.Meta) bool { return m.SID == sid })
	s.count("end_sid", err)
	return n, err
}

// EndBySubject ends every session whose subject is sub and reports how
// many were live. An empty sub ends nothing.
func (s *Store) EndBySubject(ctx context.Context, sub string) (int, error) {
	n, err := s.endBy(ctx, "end_subject", BySubject, sub, func(m codec.Meta) bool { return m.Subject == sub })
	s.count("end_subject", err)
	return n, err
}

func (s *Store) endBy(ctx context.Context, op string, ix Index, v string, match func(codec.Meta) bool) (int, error) {
	if v == "" {
		return 0, nil
	}
	if err := ctx.Err(); err != nil {
		return 0, s.wrap(op, err)
	}
	now := s.now()
	ended, err := s.e.End(ctx, ix, v, match)
	n := 0
	for _, m := range ended {
		if m.ExpiresAt.IsZero() || now.Before(m.ExpiresAt) {
			n++
		}
	}
	if n > 0 {
		s.log.Info("sessions ended", "by", op, "count", n)
	}
	return n, s.wrap(op, err)
}

// Ping reports whether the engine can be read and written: a store that
// can read but not write (a full disk) cannot save a refresh or a login,
// so it is not ready.
func (s *Store) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return s.wrap("ping", err)
	}
	return s.wrap("ping", s.e.Ping(ctx))
}
