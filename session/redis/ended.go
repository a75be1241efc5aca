package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Ended remembers ended sids and subjects for the cookie store, which
// cannot find the cookies it has handed out: a back-channel logout (or a
// Delete) received by any gateway instance is recorded here, and every
// instance's cookie store refuses the sessions it matches. It satisfies
// the cookie store's EndedStore.
//
// Records are single keys with a TTL at their until, so Redis removes them
// by itself (no sweeper):
//
//	<prefix>ended-sid:<sid>  "1"
//	<prefix>ended-sub:<sub>  since, Unix ns
//
// Both are merged by a one-key Lua script (the later until, the later
// since win), so concurrent logouts never shorten or narrow a record.
type Ended struct {
	rdb    goredis.UniversalClient
	prefix string
}

// NewEnded returns an Ended on client; an empty prefix means
// DefaultPrefix. Use the session store's prefix.
func NewEnded(client goredis.UniversalClient, prefix string) *Ended {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Ended{rdb: client, prefix: prefix}
}

// Ping implements cookie.EndedStore: Redis answers PING.
func (e *Ended) Ping(ctx context.Context) error {
	if err := e.rdb.Ping(ctx).Err(); err != nil {
		return wrapErr("ping", err)
	}
	return nil
}

func (e *Ended) sidKey(sid string) string { return e.prefix + "ended-sid:" + sid }
func (e *Ended) subKey(sub string) string { return e.prefix + "ended-sub:" + sub }

// Ended reports whether a session with the given sid and subject, created
// at created, has been ended: its sid was ended, or its subject was ended
// at or after created. Empty sid or sub match nothing. One round trip.
func (e *Ended) Ended(ctx context.Context, sid, sub string, created time.Time) (bool, error) {
	return e.EndedAny(ctx, []string{sid}, sub, created)
}

// EndedAny is Ended for several sids and one subject: whether any of the
// sids, or the subject's sessions created at created, has been ended. The
// cookie store asks for a session's sid and its deletion record at once:
// one round trip where two Ended calls took two. Empty sids and an empty
// sub match nothing.
func (e *Ended) EndedAny(ctx context.Context, sids []string, sub string, created time.Time) (bool, error) {
	n := 0
	for _, sid := range sids {
		if sid != "" {
			n++
		}
	}
	if n == 0 && sub == "" {
		return false, nil
	}
	if e.rdb == nil {
		return false, errors.New("session/redis: ended: client is nil")
	}
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("session/redis: ended: %w", err)
	}
	sidCmds := make([]*goredis.StringCmd, 0, n)
	var subCmd *goredis.StringCmd
	// GETs in one pipeline, not MGET: the keys may be in different
	// Cluster slots.
	_, err := e.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, sid := range sids {
			if sid != "" {
				sidCmds = append(sidCmds, p.Get(ctx, e.sidKey(sid)))
			}
		}
		if sub != "" {
			subCmd = p.Get(ctx, e.subKey(sub))
		}
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return false, wrapErr("ended", err)
	}
	for _, c := range sidCmds {
		if c.Err() == nil {
			return true, nil
		}
	}
	if subCmd != nil && subCmd.Err() == nil {
		ns, err := strconv.ParseInt(subCmd.Val(), 10, 64)
		if err != nil {
			// A record we cannot read: fail closed.
			return true, nil
		}
		return created.UnixNano() <= ns, nil
	}
	return false, nil
}

// endScript merges an ended record. ARGV[1] is since (Unix ns, decimal)
// for a subject record, "" for a sid record; ARGV[2] is until in ms. The
// stored since and the TTL only move later. Since values are compared as
// decimal strings (length first), which Lua's doubles could not do to the
// nanosecond.
var endScript = goredis.NewScript(`
local since = ARGV[1]
if since == '' then
  since = '1'
else
  local cur = redis.call('GET', KEYS[1])
  if cur and (#cur > #since or (#cur == #since and cur > since)) then since = cur end
end
redis.call('SET', KEYS[1], since, 'KEEPTTL')
redis.call('PEXPIREAT', KEYS[1], ARGV[2], 'NX')
redis.call('PEXPIREAT', KEYS[1], ARGV[2], 'GT')
return 1`)

// EndSID records that sessions carrying sid are ended, until until (the
// latest absolute expiry any of them can have).
func (e *Ended) EndSID(ctx context.Context, sid string, until time.Time) error {
	if sid == "" {
		return errors.New("session/redis: end sid: empty sid; an ended sid must name one")
	}
	return e.end(ctx, "end sid", e.sidKey(sid), "", until)
}

// EndSubject records that sessions of sub created at or before since are
// ended, until until. A later call widens the record (the later since and
// the later until win).
func (e *Ended) EndSubject(ctx context.Context, sub string, since, until time.Time) error {
	if sub == "" {
		return errors.New("session/redis: end subject: empty subject; an ended subject must name one")
	}
	return e.end(ctx, "end subject", e.subKey(sub), strconv.FormatInt(since.UnixNano(), 10), until)
}

func (e *Ended) end(ctx context.Context, op, key, since string, until time.Time) error {
	if e.rdb == nil {
		return fmt.Errorf("session/redis: %s: client is nil", op)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("session/redis: %s: %w", op, err)
	}
	if until.IsZero() {
		return fmt.Errorf("session/redis: %s: until is zero; pass the latest absolute expiry of the sessions it ends", op)
	}
	err := endScript.Run(ctx, e.rdb, []string{key}, since, expiryMS(until)).Err()
	return wrapErr(op, err)
}

// Purge deletes every key under prefix (a removed frontend's sessions and
// indexes: its store's prefix) but those under one of the keep prefixes,
// and reports how many sessions it deleted (session records, not their
// index keys). It walks the keys with SCAN, on every master of a cluster.
// The prefix must be a namespace's own: purging DefaultPrefix or a
// shorter prefix would take the classic sessions too, and is refused.
//
// Keep the namespace's ended records (NewEnded's prefix): a cookie
// session lives in the browser, so a frontend of that name added again
// later would otherwise accept again the cookies its users had logged out
// of. They expire by themselves.
func Purge(ctx context.Context, client goredis.UniversalClient, prefix string, keep ...string) (int, error) {
	if client == nil {
		return 0, errors.New("session/redis: purge: client is nil")
	}
	if prefix == "" || len(prefix) <= len(DefaultPrefix) && strings.HasPrefix(DefaultPrefix, prefix) {
		return 0, fmt.Errorf("session/redis: purge: %q is not a namespace's prefix", prefix)
	}
	pattern := globEscape(prefix) + "*"
	var n atomic.Int64
	purge := func(ctx context.Context, c goredis.Cmdable) error {
		it := c.Scan(ctx, 0, pattern, 500).Iterator()
		var batch []string
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			// One key per call: in a cluster the keys of a batch may
			// live in different slots.
			for _, k := range batch {
				d, err := c.Del(ctx, k).Result()
				if err != nil {
					return err
				}
				if strings.HasPrefix(k, prefix+"r:") {
					n.Add(d)
				}
			}
			batch = batch[:0]
			return nil
		}
		for it.Next(ctx) {
			if k := it.Val(); !slices.ContainsFunc(keep, func(p string) bool { return strings.HasPrefix(k, p) }) {
				batch = append(batch, k)
			}
			if len(batch) == 500 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if err := it.Err(); err != nil {
			return err
		}
		return flush()
	}
	var err error
	if cc, ok := client.(*goredis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error { return purge(ctx, c) })
	} else {
		err = purge(ctx, client)
	}
	if err != nil {
		return int(n.Load()), wrapErr("purge", err)
	}
	return int(n.Load()), nil
}

// globEscape escapes the characters SCAN's MATCH treats as a pattern.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
