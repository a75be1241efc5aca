package redis

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/internal/redisfault"
	"github.com/bffgate/bffgate/session"
	"github.com/bffgate/bffgate/session/codec"
	"github.com/bffgate/bffgate/session/tickets"
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

// Store is a session.Store on Redis: the rules of session/tickets on this
// package's Engine. It is safe for concurrent use. It does not own the
// client: the caller closes it.
type Store struct {
	*tickets.Store
	e *Engine
}

var _ session.Store = (*Store)(nil)

// New returns a Store on client.
func New(client goredis.UniversalClient, cfg Config) (*Store, error) {
	e, err := NewEngine(client, cfg)
	if err != nil {
		return nil, err
	}
	rules, err := tickets.New(e, tickets.Config{Name: "redis", Now: cfg.Now, Logger: e.log, Registerer: cfg.Registerer})
	if err != nil {
		return nil, err
	}
	return &Store{Store: rules, e: e}, nil
}

// Engine is the tickets.Engine on Redis (see the package documentation
// for its keys). It is safe for concurrent use.
type Engine struct {
	rdb     goredis.UniversalClient
	prefix  string
	now     func() time.Time
	log     *slog.Logger
	retries int
}

var _ tickets.Engine = (*Engine)(nil)

// NewEngine returns the Engine on client. Config.Registerer is not used
// (the rules count operations).
func NewEngine(client goredis.UniversalClient, cfg Config) (*Engine, error) {
	if client == nil {
		return nil, errors.New("session/redis: New: client is nil")
	}
	if cfg.MaxRetries < 0 {
		return nil, fmt.Errorf("session/redis: Config.MaxRetries is %d; it must be positive (or zero for 100)", cfg.MaxRetries)
	}
	e := &Engine{rdb: client, prefix: cfg.Prefix, now: cfg.Now, log: cfg.Logger, retries: cfg.MaxRetries}
	if e.prefix == "" {
		e.prefix = DefaultPrefix
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.log = e.log.With("subsystem", "session.redis")
	if e.retries == 0 {
		e.retries = 100
	}
	return e, nil
}

func (e *Engine) recordKey(id []byte) string { return e.prefix + "r:" + encodeID(id) }
func (e *Engine) sidKey(sid string) string   { return e.prefix + "sid:" + sid }
func (e *Engine) subKey(sub string) string   { return e.prefix + "sub:" + sub }

// encodeID is a ticket id as it appears in keys and index members
// (codec.Ticket.ID): base64url without padding.
func encodeID(id []byte) string { return base64.RawURLEncoding.EncodeToString(id) }

// wrapErr adds the operation to err; a fault of the deployment
// (redisfault.Is: a refused or broken connection, a pool timeout, a closed
// client, a deadline, a server loading, read-only or without cluster
// quorum) also matches session.ErrUnavailable, so the gateway answers 503
// and keeps the session.
func wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if redisfault.Is(err) {
		return fmt.Errorf("session/redis: %s: %w: %w", op, session.ErrUnavailable, err)
	}
	return fmt.Errorf("session/redis: %s: %w", op, err)
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
func (e *Engine) addIndex(ctx context.Context, p goredis.Pipeliner, id string, m codec.Meta, now time.Time) {
	for _, key := range e.indexKeys(m) {
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

func (e *Engine) removeIndex(ctx context.Context, p goredis.Pipeliner, id string, m codec.Meta) {
	for _, key := range e.indexKeys(m) {
		p.ZRem(ctx, key, id)
	}
}

func (e *Engine) indexKeys(m codec.Meta) []string {
	keys := make([]string, 0, 2)
	if m.SID != "" {
		keys = append(keys, e.sidKey(m.SID))
	}
	if m.Subject != "" {
		keys = append(keys, e.subKey(m.Subject))
	}
	return keys
}

// pipe runs fn in a plain pipeline (in a Cluster, split per node) and
// returns the first error other than redis.Nil.
func (e *Engine) pipe(ctx context.Context, fn func(goredis.Pipeliner)) error {
	cmds, err := e.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error { fn(p); return nil })
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

// Get returns the record under id: one GET.
func (e *Engine) Get(ctx context.Context, id []byte) ([]byte, error) {
	rec, err := e.rdb.Get(ctx, e.recordKey(id)).Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, wrapErr("get", err)
	}
	return rec, nil
}

// Create stores the index entries first, then the record (SET NX), so
// that the indexes always name at least every live record.
func (e *Engine) Create(ctx context.Context, id, rec []byte, m codec.Meta) error {
	sid := encodeID(id)
	if len(e.indexKeys(m)) > 0 {
		now := e.now()
		if err := e.pipe(ctx, func(p goredis.Pipeliner) { e.addIndex(ctx, p, sid, m, now) }); err != nil {
			return wrapErr("create: index", err)
		}
	}
	var set *goredis.Cmd
	if err := e.pipe(ctx, func(p goredis.Pipeliner) { set = writeRecord(ctx, p, e.recordKey(id), rec, m, true) }); err != nil {
		return wrapErr("create", err)
	}
	if set.Val() == nil {
		return tickets.ErrExists
	}
	return nil
}

// fnError carries the function's error out of a WATCH transaction.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// Update is an optimistic transaction: WATCH the record, run fn on it,
// MULTI/EXEC the change; when a concurrent writer got there first, read
// again and rerun fn, up to Config.MaxRetries times, so no update is lost.
// Index entries a new record needs are added before its write (on the
// main client: in a Cluster they may live on other nodes), and those it
// no longer matches are removed after it.
func (e *Engine) Update(ctx context.Context, id []byte, fn func(rec []byte) (tickets.Change, error)) error {
	key, sid := e.recordKey(id), encodeID(id)
	for attempt := range e.retries {
		var c tickets.Change
		err := e.rdb.Watch(ctx, func(tx *goredis.Tx) error {
			rec, err := tx.Get(ctx, key).Bytes()
			if errors.Is(err, goredis.Nil) {
				rec, err = nil, nil
			}
			if err != nil {
				return err
			}
			if c, err = fn(rec); err != nil {
				return fnError{err}
			}
			switch c.Op {
			case tickets.Keep:
				return nil
			case tickets.Remove:
				_, err = tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
					p.Del(ctx, key)
					return nil
				})
				return err
			case tickets.Put:
				if c.Meta != c.Old {
					now := e.now()
					if err := e.pipe(ctx, func(p goredis.Pipeliner) { e.addIndex(ctx, p, sid, c.Meta, now) }); err != nil {
						return err
					}
				}
				_, err = tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
					writeRecord(ctx, p, key, c.Record, c.Meta, false)
					return nil
				})
				return err
			}
			return fmt.Errorf("unknown change %d", c.Op)
		}, key)
		var fe fnError
		switch {
		case err == nil:
			switch c.Op {
			case tickets.Remove:
				e.unlinkOld(ctx, sid, c.Old, codec.Meta{})
			case tickets.Put:
				e.unlinkOld(ctx, sid, c.Old, c.Meta)
			}
			return nil
		case errors.Is(err, goredis.TxFailedErr):
			// Lost the race to a concurrent writer: read again. A short
			// random pause spreads out writers that keep colliding.
			if attempt > 2 {
				time.Sleep(time.Duration(rand.IntN(200*min(attempt, 20))) * time.Microsecond)
			}
			continue
		case errors.As(err, &fe):
			return fe.err
		}
		return wrapErr("update", err)
	}
	return fmt.Errorf("session/redis: update: %w: %d attempts lost the race to concurrent updates of the same session; retry the request", session.ErrUnavailable, e.retries)
}

// unlinkOld removes the index entries that a record no longer matches (its
// sid or subject changed, or it was deleted). Failures leave stale entries,
// which ending by sid or subject checks against the record; they are
// logged only.
func (e *Engine) unlinkOld(ctx context.Context, id string, old, now codec.Meta) {
	var keys []string
	if old.SID != "" && old.SID != now.SID {
		keys = append(keys, e.sidKey(old.SID))
	}
	if old.Subject != "" && old.Subject != now.Subject {
		keys = append(keys, e.subKey(old.Subject))
	}
	if len(keys) == 0 {
		return
	}
	err := e.pipe(ctx, func(p goredis.Pipeliner) {
		for _, k := range keys {
			p.ZRem(ctx, k, id)
		}
	})
	if err != nil {
		e.log.Warn("could not remove stale session index entries; they expire with their score", "err", err)
	}
}

// casDelete deletes KEYS[1] only if it still holds ARGV[1]: the record
// that was read and checked, not one a concurrent Update rewrote.
var casDelete = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return -1`)

// End reads the index, then every record it names (one pipeline), and
// deletes those match accepts with a compare-and-delete each, so that a
// record rewritten meanwhile is read and checked again.
func (e *Engine) End(ctx context.Context, ix tickets.Index, v string, match func(codec.Meta) bool) ([]codec.Meta, error) {
	var index string
	switch ix {
	case tickets.BySID:
		index = e.sidKey(v)
	case tickets.BySubject:
		index = e.subKey(v)
	default:
		return nil, fmt.Errorf("session/redis: end: unknown index %d", ix)
	}
	ids, err := e.rdb.ZRange(ctx, index, 0, -1).Result()
	if err != nil {
		return nil, wrapErr("end", err)
	}
	var out []codec.Meta
	for attempt := 0; len(ids) > 0; attempt++ {
		if attempt == e.retries {
			return out, fmt.Errorf("session/redis: end: %w: sessions kept changing while being ended; retry", session.ErrUnavailable)
		}
		gets := make([]*goredis.StringCmd, len(ids))
		if err := e.pipe(ctx, func(p goredis.Pipeliner) {
			for i, id := range ids {
				gets[i] = p.Get(ctx, e.prefix+"r:"+id)
			}
		}); err != nil {
			return out, wrapErr("end", err)
		}
		type victim struct {
			id   string
			rec  string
			meta codec.Meta
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
			victims = append(victims, victim{id, rec, m})
		}
		dels := make([]*goredis.Cmd, len(victims))
		if err := e.pipe(ctx, func(p goredis.Pipeliner) {
			for i, v := range victims {
				dels[i] = casDelete.Eval(ctx, p, []string{e.prefix + "r:" + v.id}, v.rec)
			}
			for _, id := range stale {
				p.ZRem(ctx, index, id)
			}
		}); err != nil {
			return out, wrapErr("end", err)
		}
		ids = ids[:0]
		var ended []victim
		for i, v := range victims {
			switch r, _ := dels[i].Int64(); r {
			case 1:
				ended = append(ended, v)
				out = append(out, v.meta)
			case -1:
				ids = append(ids, v.id) // rewritten meanwhile: check again
			default:
				ended = append(ended, v) // deleted meanwhile
			}
		}
		if len(ended) > 0 {
			// Both of each ended session's index entries go (the sid
			// and the subject index).
			err := e.pipe(ctx, func(p goredis.Pipeliner) {
				for _, v := range ended {
					e.removeIndex(ctx, p, v.id, v.meta)
				}
			})
			if err != nil {
				e.log.Warn("could not remove ended sessions from their indexes; they expire with their score", "index", index, "err", err)
			}
		}
	}
	return out, nil
}

// Ping reports whether Redis answers.
func (e *Engine) Ping(ctx context.Context) error {
	return wrapErr("ping", e.rdb.Ping(ctx).Err())
}
