package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/session"
	"github.com/bffgate/bffgate/session/codec"
)

// DefaultPrefix starts every key when Config.Prefix is empty.
const DefaultPrefix = "bffgate:session:"

// Config configures a Store.
type Config struct {
	// Prefix starts every key, keeping the sessions apart from other users
	// of the Redis and letting an ACL user be limited to them. Default
	// DefaultPrefix.
	Prefix string
	// Now is the clock for every expiry decision; nil means time.Now.
	Now func() time.Time
	// Logger receives ended sessions (info) and refused tickets (debug);
	// nil means no logging.
	Logger *slog.Logger
	// Registerer receives the store's metrics; nil means none.
	Registerer prometheus.Registerer
	// MaxRetries bounds how often Update retries after a concurrent writer
	// changed the session between its read and its write. Default 100.
	MaxRetries int
}

// Store is a session.Store on Redis. It is safe for concurrent use. It does
// not own the client: the caller closes it.
type Store struct {
	rdb     goredis.UniversalClient
	prefix  string
	now     func() time.Time
	log     *slog.Logger
	retries int
	ops     *prometheus.CounterVec
	// opened skips decrypting and decoding an unchanged record on Get.
	opened *codec.OpenCache
}

var _ session.Store = (*Store)(nil)

// New returns a Store on client.
func New(client goredis.UniversalClient, cfg Config) (*Store, error) {
	if client == nil {
		return nil, errors.New("session/redis: New: client is nil")
	}
	if cfg.MaxRetries < 0 {
		return nil, fmt.Errorf("session/redis: Config.MaxRetries is %d; it must be positive (or zero for 100)", cfg.MaxRetries)
	}
	s := &Store{rdb: client, prefix: cfg.Prefix, now: cfg.Now, log: cfg.Logger, retries: cfg.MaxRetries, opened: codec.NewOpenCache(0)}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("subsystem", "session.redis")
	if s.retries == 0 {
		s.retries = 100
	}
	s.ops = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bffgate_session_redis_operations_total",
		Help: "Session store operations on the Redis store, by operation and result (ok, not_found, unavailable, error).",
	}, []string{"op", "result"})
	if r := cfg.Registerer; r != nil {
		if err := r.Register(s.ops); err != nil {
			return nil, fmt.Errorf("session/redis: register metrics (one Redis session store per registry): %w", err)
		}
	}
	return s, nil
}

func (s *Store) recordKey(id string) string { return s.prefix + "r:" + id }
func (s *Store) sidKey(sid string) string   { return s.prefix + "sid:" + sid }
func (s *Store) subKey(sub string) string   { return s.prefix + "sub:" + sub }

func (s *Store) count(op string, err error) {
	switch {
	case err == nil:
		s.ops.WithLabelValues(op, "ok").Inc()
	case errors.Is(err, session.ErrNotFound):
		s.ops.WithLabelValues(op, "not_found").Inc()
	case errors.Is(err, session.ErrUnavailable):
		s.ops.WithLabelValues(op, "unavailable").Inc()
	default:
		s.ops.WithLabelValues(op, "error").Inc()
	}
}

func notFound(why string) error {
	return fmt.Errorf("%w: %s", session.ErrNotFound, why)
}

// wrapErr adds the operation to err; anything but the caller's cancel and
// a reply about the command itself (a refused or broken connection, a
// pool timeout, a closed client, a deadline, a server loading, read-only
// or without cluster quorum) also matches session.ErrUnavailable, so the
// gateway answers 503 and keeps the session.
func wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if unavailable(err) {
		return fmt.Errorf("session/redis: %s: %w: %w", op, session.ErrUnavailable, err)
	}
	return fmt.Errorf("session/redis: %s: %w", op, err)
}

func unavailable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, goredis.TxFailedErr) {
		return false
	}
	var rerr goredis.Error
	if errors.As(err, &rerr) {
		msg := rerr.Error()
		for _, p := range []string{"LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY ", "NOREPLICAS"} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		return false
	}
	// Everything else that go-redis returns comes from the connection
	// (io.EOF, a reset or refused dial, TLS, pool timeout, ErrClosed) or
	// is a deadline: Redis could not serve.
	return true
}

// expiryMS is a record's expiry for PEXPIREAT and index scores: rounded up
// to the millisecond so that Redis never drops a session before its
// expiry; 0 means none.
func expiryMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	ms := t.UnixMilli()
	if t.After(time.UnixMilli(ms)) {
		ms++
	}
	return ms
}

// score is an index member's score: the expiry in ms, +inf for none.
func score(m codec.Meta) float64 {
	if m.ExpiresAt.IsZero() {
		return math.Inf(1)
	}
	return float64(expiryMS(m.ExpiresAt))
}

// addIndex queues the index entries of a record with meta m: each entry is
// added (or its score raised), entries already past now are pruned, and
// the index key's TTL follows its latest member.
func (s *Store) addIndex(ctx context.Context, p goredis.Pipeliner, id string, m codec.Meta, now time.Time) {
	for _, key := range s.indexKeys(m) {
		p.ZAddArgs(ctx, key, goredis.ZAddArgs{GT: true, Members: []goredis.Z{{Score: score(m), Member: id}}})
		p.ZRemRangeByScore(ctx, key, "-inf", "("+strconv.FormatInt(now.UnixMilli(), 10))
		if ms := expiryMS(m.ExpiresAt); ms > 0 {
			p.Do(ctx, "pexpireat", key, ms, "nx")
			p.Do(ctx, "pexpireat", key, ms, "gt")
		} else {
			p.Persist(ctx, key)
		}
	}
}

func (s *Store) removeIndex(ctx context.Context, p goredis.Pipeliner, id string, m codec.Meta) {
	for _, key := range s.indexKeys(m) {
		p.ZRem(ctx, key, id)
	}
}

func (s *Store) indexKeys(m codec.Meta) []string {
	keys := make([]string, 0, 2)
	if m.SID != "" {
		keys = append(keys, s.sidKey(m.SID))
	}
	if m.Subject != "" {
		keys = append(keys, s.subKey(m.Subject))
	}
	return keys
}

// pipe runs fn in a plain pipeline (in a Cluster, split per node) and
// returns the first error other than redis.Nil.
func (s *Store) pipe(ctx context.Context, fn func(goredis.Pipeliner)) error {
	cmds, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error { fn(p); return nil })
	if err != nil && !errors.Is(err, goredis.Nil) {
		return err
	}
	for _, c := range cmds {
		if err := c.Err(); err != nil && !errors.Is(err, goredis.Nil) {
			return err
		}
	}
	return nil
}

// writeRecord queues SET of a sealed record with its expiry.
func writeRecord(ctx context.Context, p goredis.Pipeliner, key string, rec []byte, m codec.Meta, nx bool) *goredis.Cmd {
	args := []any{"set", key, rec}
	if ms := expiryMS(m.ExpiresAt); ms > 0 {
		args = append(args, "pxat", ms)
	}
	if nx {
		args = append(args, "nx")
	}
	return p.Do(ctx, args...)
}

// Create seals sess under a fresh ticket and stores it: the index entries
// first, then the record (SET NX). sess.ID is ignored: the ticket's id is
// the session's identity.
func (s *Store) Create(ctx context.Context, sess *session.Session) (string, error) {
	h, err := s.create(ctx, sess)
	s.count("create", err)
	return h, err
}

func (s *Store) create(ctx context.Context, sess *session.Session) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("session/redis: create: %w", err)
	}
	now := s.now()
	tk, rec, err := codec.SealNew(sess, now)
	if err != nil {
		return "", fmt.Errorf("session/redis: create: %w", err)
	}
	id, m := tk.ID(), codec.MetaOf(sess)
	if len(s.indexKeys(m)) > 0 {
		if err := s.pipe(ctx, func(p goredis.Pipeliner) { s.addIndex(ctx, p, id, m, now) }); err != nil {
			return "", wrapErr("create: index", err)
		}
	}
	var set *goredis.Cmd
	if err := s.pipe(ctx, func(p goredis.Pipeliner) { set = writeRecord(ctx, p, s.recordKey(id), rec, m, true) }); err != nil {
		return "", wrapErr("create", err)
	}
	if set.Val() == nil {
		// 2^-128: only a broken random source gets here.
		return "", errors.New("session/redis: create: a record already exists under the new ticket id; is crypto/rand working?")
	}
	return tk.Handle(), nil
}

// Get opens the session that handle names: one GET.
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
		return nil, fmt.Errorf("session/redis: get: %w", err)
	}
	rec, err := s.rdb.Get(ctx, s.recordKey(tk.ID())).Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, notFound("no record under the ticket id")
	}
	if err != nil {
		return nil, wrapErr("get", err)
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

// errNoSession ends an Update transaction for "no live session".
var errNoSession = errors.New("no live session")

type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

// Update opens, changes and reseals the session in an optimistic
// transaction (WATCH the record, MULTI/EXEC the new one), retried when a
// concurrent writer got there first, so no update is lost. It returns
// handle unchanged.
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
		return fmt.Errorf("session/redis: update: %w", err)
	}
	id := tk.ID()
	key := s.recordKey(id)
	for attempt := range s.retries {
		var why string
		var oldMeta, newMeta codec.Meta
		changed := false
		err := s.rdb.Watch(ctx, func(tx *goredis.Tx) error {
			v, err := tx.Get(ctx, key).Bytes()
			if errors.Is(err, goredis.Nil) {
				why = "no record under the ticket id"
				return errNoSession
			}
			if err != nil {
				return err
			}
			sess, err := codec.Open(tk, v)
			if err != nil {
				why = "the ticket does not open its record"
				return errNoSession
			}
			oldMeta = codec.MetaOf(sess)
			now := s.now()
			if sess.Expired(now) {
				why = "the session has expired"
				return s.drop(ctx, tx, key, id, oldMeta)
			}
			version := sess.Version
			if err := fn(sess); err != nil {
				return callbackError{err}
			}
			sess.Version = version + 1
			if sess.Expired(now) {
				// fn ended the session (e.g. moved AbsoluteExpiry back).
				why = "the update left the session expired"
				return s.drop(ctx, tx, key, id, oldMeta)
			}
			rec, err := codec.Seal(tk, sess)
			if err != nil {
				return err
			}
			newMeta = codec.MetaOf(sess)
			changed = newMeta != oldMeta
			if changed {
				// Index first (on the main client: the index keys may
				// live on other Cluster nodes), so that it always names
				// the live record; stale entries are harmless.
				if err := s.pipe(ctx, func(p goredis.Pipeliner) { s.addIndex(ctx, p, id, newMeta, now) }); err != nil {
					return err
				}
			}
			_, err = tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
				writeRecord(ctx, p, key, rec, newMeta, false)
				return nil
			})
			return err
		}, key)
		var cb callbackError
		switch {
		case err == nil:
			if changed {
				s.unlinkOld(ctx, id, oldMeta, newMeta)
			}
			return nil
		case errors.Is(err, goredis.TxFailedErr):
			// Lost the race to a concurrent writer: read again. A short
			// random pause spreads out writers that keep colliding.
			if attempt > 2 {
				time.Sleep(time.Duration(rand.IntN(200*min(attempt, 20))) * time.Microsecond)
			}
			continue
		case errors.As(err, &cb):
			return cb.err
		case errors.Is(err, errNoSession):
			if why == "the session has expired" || why == "the update left the session expired" {
				s.unlinkOld(ctx, id, oldMeta, codec.Meta{})
			}
			return notFound(why)
		}
		return wrapErr("update", err)
	}
	return fmt.Errorf("session/redis: update: %d attempts lost the race to concurrent updates of the same session; retry the request", s.retries)
}

// drop deletes an expired record inside an Update transaction.
func (s *Store) drop(ctx context.Context, tx *goredis.Tx, key, id string, m codec.Meta) error {
	_, err := tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.Del(ctx, key)
		return nil
	})
	if err != nil {
		return err
	}
	return errNoSession
}

// unlinkOld removes the index entries that a record no longer matches (its
// sid or subject changed, or it was deleted). Failures leave stale entries,
// which ending by sid or subject checks against the record; they are
// logged only.
func (s *Store) unlinkOld(ctx context.Context, id string, old, now codec.Meta) {
	var keys []string
	if old.SID != "" && old.SID != now.SID {
		keys = append(keys, s.sidKey(old.SID))
	}
	if old.Subject != "" && old.Subject != now.Subject {
		keys = append(keys, s.subKey(old.Subject))
	}
	if len(keys) == 0 {
		return
	}
	err := s.pipe(ctx, func(p goredis.Pipeliner) {
		for _, k := range keys {
			p.ZRem(ctx, k, id)
		}
	})
	if err != nil {
		s.log.Warn("could not remove stale session index entries; they expire with their score", "err", err)
	}
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
		return fmt.Errorf("session/redis: delete: %w", err)
	}
	id := tk.ID()
	key := s.recordKey(id)
	rec, err := s.rdb.Get(ctx, key).Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil
	}
	if err != nil {
		return wrapErr("delete", err)
	}
	// Only the key's holder may delete: a guessed id with a wrong key
	// must not end someone else's session.
	sess, err := codec.Open(tk, rec)
	if err != nil {
		return nil
	}
	if err := s.rdb.Del(ctx, key).Err(); err != nil {
		return wrapErr("delete", err)
	}
	s.unlinkOld(ctx, id, codec.MetaOf(sess), codec.Meta{})
	return nil
}

// EndBySID ends every session whose sid is sid and reports how many were
// live. An empty sid ends nothing.
func (s *Store) EndBySID(ctx context.Context, sid string) (int, error) {
	if sid == "" {
		return 0, nil
	}
	n, err := s.endBy(ctx, "end_sid", s.sidKey(sid), func(m codec.Meta) bool { return m.SID == sid })
	s.count("end_sid", err)
	return n, err
}

// EndBySubject ends every session whose subject is sub and reports how
// many were live. An empty sub ends nothing.
func (s *Store) EndBySubject(ctx context.Context, sub string) (int, error) {
	if sub == "" {
		return 0, nil
	}
	n, err := s.endBy(ctx, "end_subject", s.subKey(sub), func(m codec.Meta) bool { return m.Subject == sub })
	s.count("end_subject", err)
	return n, err
}

// casDelete deletes KEYS[1] only if it still holds ARGV[1]: the record
// that was read and checked, not one a concurrent Update rewrote.
var casDelete = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return -1`)

func (s *Store) endBy(ctx context.Context, op, index string, match func(codec.Meta) bool) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("session/redis: %s: %w", op, err)
	}
	now := s.now()
	ids, err := s.rdb.ZRange(ctx, index, 0, -1).Result()
	if err != nil {
		return 0, wrapErr(op, err)
	}
	n := 0
	for attempt := 0; len(ids) > 0; attempt++ {
		if attempt == s.retries {
			return n, fmt.Errorf("session/redis: %s: sessions kept changing while being ended; retry", op)
		}
		gets := make([]*goredis.StringCmd, len(ids))
		if err := s.pipe(ctx, func(p goredis.Pipeliner) {
			for i, id := range ids {
				gets[i] = p.Get(ctx, s.recordKey(id))
			}
		}); err != nil {
			return n, wrapErr(op, err)
		}
		type victim struct {
			id   string
			rec  string
			meta codec.Meta
			live bool
		}
		var victims []victim
		var stale []string
		for i, id := range ids {
			rec, err := gets[i].Result()
			if err != nil { // redis.Nil: gone already
				stale = append(stale, id)
				continue
			}
			m, err := codec.ParseMeta([]byte(rec))
			if err != nil || !match(m) {
				// Not (or no longer) this sid's or subject's session.
				stale = append(stale, id)
				continue
			}
			victims = append(victims, victim{id, rec, m, m.ExpiresAt.IsZero() || now.Before(m.ExpiresAt)})
		}
		dels := make([]*goredis.Cmd, len(victims))
		if err := s.pipe(ctx, func(p goredis.Pipeliner) {
			for i, v := range victims {
				dels[i] = casDelete.Eval(ctx, p, []string{s.recordKey(v.id)}, v.rec)
			}
			for _, id := range stale {
				p.ZRem(ctx, index, id)
			}
		}); err != nil {
			return n, wrapErr(op, err)
		}
		ids = ids[:0]
		var ended []victim
		for i, v := range victims {
			switch r, _ := dels[i].Int64(); r {
			case 1:
				ended = append(ended, v)
				if v.live {
					n++
				}
			case -1:
				ids = append(ids, v.id) // rewritten meanwhile: check again
			default:
				ended = append(ended, v) // deleted meanwhile
			}
		}
		if len(ended) > 0 {
			// Both of each ended session's index entries go (the sid
			// and the subject index).
			err := s.pipe(ctx, func(p goredis.Pipeliner) {
				for _, v := range ended {
					s.removeIndex(ctx, p, v.id, v.meta)
				}
			})
			if err != nil {
				s.log.Warn("could not remove ended sessions from their indexes; they expire with their score", "index", index, "err", err)
			}
		}
	}
	if n > 0 {
		s.log.Info("sessions ended", "by", op, "count", n)
	}
	return n, nil
}

// Ping reports whether Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("session/redis: ping: %w", err)
	}
	return wrapErr("ping", s.rdb.Ping(ctx).Err())
}
