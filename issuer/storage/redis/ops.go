package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/issuer/storage"
)

// Kinds of record in the expiry index (the first byte of a member).
const (
	kindCode    = 'c'
	kindRefresh = 'r'
	kindGrant   = 'g'
	kindDeny    = 'd'
	kindLog     = 'l'
	kindLogin   = 's'
)

// Keys returns every stored key.
func (s *Store) Keys(ctx context.Context) ([]storage.Key, error) {
	var out []storage.Key
	err := s.view(ctx, "keys", func() error {
		v, err := s.rdb.Get(ctx, s.k.keyList()).Bytes()
		if errors.Is(err, goredis.Nil) {
			return nil
		}
		if err != nil {
			return err
		}
		return decode("key list", v, &out)
	})
	return out, err
}

// UpdateKeys replaces the key list with fn's result in one transaction;
// an error from fn is returned as is and changes nothing.
func (s *Store) UpdateKeys(ctx context.Context, fn func([]storage.Key) ([]storage.Key, error)) error {
	return s.update(ctx, "update keys", func(t *txn) error {
		v, err := t.get1(s.k.keyList())
		if err != nil {
			return err
		}
		var old []storage.Key
		if v != nil {
			if err := decode("key list", []byte(*v), &old); err != nil {
				return err
			}
		}
		next, err := fn(old)
		if err != nil {
			return callbackError{err}
		}
		seen := make(map[string]bool, len(next))
		for _, k := range next {
			if k.ID == "" {
				return invalid("key with empty ID")
			}
			if seen[k.ID] {
				return invalid("duplicate key ID %q", k.ID)
			}
			seen[k.ID] = true
		}
		data, err := json.Marshal(next)
		if err != nil {
			return invalid("encode key list: %w", err)
		}
		t.set(s.k.keyList(), string(data), time.Time{})
		return nil
	})
}

// Secret returns the secret named name, generating and storing it with gen
// on first use (SET NX). In one process concurrent first callers share one
// gen call; across instances several may generate, and all get the value
// that was stored first.
func (s *Store) Secret(ctx context.Context, name string, gen func() ([]byte, error)) ([]byte, error) {
	if name == "" {
		return nil, errors.New("redis: secret: name is empty")
	}
	key := s.k.secret(name)
	get := func() ([]byte, error) {
		v, err := s.rdb.Get(ctx, key).Bytes()
		if errors.Is(err, goredis.Nil) {
			return nil, nil
		}
		return v, wrapErr("secret", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("redis: secret: %w", err)
	}
	if v, err := get(); err != nil || v != nil {
		return v, err
	}
	s.secretMu.Lock()
	defer s.secretMu.Unlock()
	if v, err := get(); err != nil || v != nil {
		return v, err
	}
	v, err := gen()
	if err != nil {
		return nil, err
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("redis: secret: generator for secret %q returned no bytes", name)
	}
	ok, err := s.rdb.SetNX(ctx, key, v, 0).Result()
	if err != nil {
		return nil, wrapErr("secret", err)
	}
	if ok {
		return append([]byte(nil), v...), nil
	}
	// Another instance stored it first: use theirs.
	v, err = get()
	if err == nil && v == nil {
		err = fmt.Errorf("redis: secret: %q vanished right after being stored; check that nothing else deletes %s", name, key)
	}
	return v, err
}

// CreateCode stores c; a code already stored under c.Hash is
// storage.ErrAlreadyExists.
func (s *Store) CreateCode(ctx context.Context, c storage.AuthCode) error {
	if err := storage.CheckNewCode(c); err != nil {
		return err
	}
	return s.update(ctx, "create code", func(t *txn) error {
		v, err := t.get1(s.k.code(c.Hash))
		if err != nil {
			return err
		}
		if v != nil {
			return storage.ErrAlreadyExists
		}
		return t.putCode(c)
	})
}

// RedeemCode marks the code redeemed and stores what mint returns, in one
// transaction. mint must return a Grant: its ID becomes the code's
// RedeemedGrant, which a replay of the code reports.
func (s *Store) RedeemCode(ctx context.Context, codeHash string, now time.Time, mint func(storage.AuthCode) (storage.Issued, error)) (storage.AuthCode, error) {
	var out storage.AuthCode
	err := s.update(ctx, "redeem code", func(t *txn) error {
		c, err := t.code(codeHash)
		if err != nil {
			return err
		}
		// A replay is reported even after expiry (until purged): the
		// caller revokes the grant either way.
		if c.RedeemedGrant != "" {
			return &storage.CodeReusedError{Code: c}
		}
		if expired(c.ExpiresAt, now) {
			return storage.ErrExpired
		}
		iss, err := mint(c)
		if err != nil {
			return callbackError{err}
		}
		if iss.Grant == nil {
			return invalid("mint returned no grant: a redeemed code must name the grant it created")
		}
		if err := t.storeIssued(iss); err != nil {
			return err
		}
		c.RedeemedGrant = iss.Grant.ID
		if err := t.putCode(c); err != nil {
			return err
		}
		out = c
		return nil
	})
	return out, err
}

// RotateRefresh checks jti against the allowlist, removes it when rotate is
// true and stores what mint returns, in one transaction. Besides the
// contract's errors it returns storage.ErrExpired for a record past its
// ExpiresAt that is still stored (nothing is changed).
func (s *Store) RotateRefresh(ctx context.Context, jti string, rotate bool, now time.Time, mint func(storage.RefreshToken) (storage.Issued, error)) error {
	return s.update(ctx, "rotate refresh token", func(t *txn) error {
		rt, err := t.refreshToken(jti)
		if err != nil {
			return err
		}
		if expired(rt.ExpiresAt, now) {
			return storage.ErrExpired
		}
		iss, err := mint(rt)
		if err != nil {
			return callbackError{err}
		}
		if iss.Grant != nil && iss.Grant.ID != rt.GrantID {
			return invalid("mint returned grant %q for a refresh token of grant %q", iss.Grant.ID, rt.GrantID)
		}
		if rotate {
			if _, err := t.deleteRefresh(jti); err != nil {
				return err
			}
		}
		return t.storeIssued(iss)
	})
}

// RefreshToken returns the allowlist record of jti. The record is returned
// even past its ExpiresAt until Purge (or its TTL) removes it; callers
// check expiry.
func (s *Store) RefreshToken(ctx context.Context, jti string) (storage.RefreshToken, error) {
	var out storage.RefreshToken
	err := s.view(ctx, "refresh token", func() error {
		return s.getJSON(ctx, s.k.refresh(jti), "refresh token "+jti, &out)
	})
	return out, err
}

// RevokeGrant removes the grant, its refresh tokens and its index entries
// and denylists its id until deniedUntil.
func (s *Store) RevokeGrant(ctx context.Context, grantID string, deniedUntil, now time.Time) error {
	if err := storage.CheckRevoke("revoke grant", "grant id", grantID, deniedUntil, "the latest expiry of the grant's tokens plus the purge delay"); err != nil {
		return err
	}
	return s.update(ctx, "revoke grant", func(t *txn) error {
		return t.revokeGrant(grantID, deniedUntil)
	})
}

// RevokeAccessToken denylists jti until deniedUntil and removes the
// refresh tokens of grantID (when not empty) from the allowlist. The grant
// record stays and is purged with its expiry.
func (s *Store) RevokeAccessToken(ctx context.Context, jti, grantID string, deniedUntil, now time.Time) error {
	if err := storage.CheckRevoke("revoke access token", "jti", jti, deniedUntil, "the token's exp plus the purge delay"); err != nil {
		return err
	}
	return s.update(ctx, "revoke access token", func(t *txn) error {
		if err := t.deny(storage.DenyEntry{Kind: storage.DenyJTI, ID: jti, Until: deniedUntil}); err != nil {
			return err
		}
		if grantID == "" {
			return nil
		}
		_, err := t.deleteGrantRefresh(grantID)
		return err
	})
}

// RevokeSID revokes every grant indexed under the login session sid and
// returns their ids, sorted.
func (s *Store) RevokeSID(ctx context.Context, sid string, deniedUntil, now time.Time) ([]string, error) {
	if err := storage.CheckRevoke("revoke sid", "sid", sid, deniedUntil, "the latest token expiry plus the purge delay"); err != nil {
		return nil, err
	}
	var ids []string
	err := s.update(ctx, "revoke sid", func(t *txn) error {
		ids = nil
		members, err := t.members(s.k.sidGrants(sid))
		if err != nil {
			return err
		}
		for _, id := range members {
			// An index entry whose grant expired away (TTL) names
			// nothing to revoke.
			_, ok, err := t.grant(id)
			if err != nil {
				return err
			}
			if !ok {
				t.queue(func(p goredis.Pipeliner) { p.SRem(t.ctx, s.k.sidGrants(sid), id) })
				continue
			}
			if err := t.revokeGrant(id, deniedUntil); err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(ids)
	return ids, nil
}

// Denied reports whether kind/id is on the denylist. An entry counts until
// Purge (or its TTL) removes it.
func (s *Store) Denied(ctx context.Context, kind storage.DenyKind, id string) (bool, error) {
	if id == "" {
		return false, nil
	}
	var found bool
	err := s.view(ctx, "denied", func() error {
		n, err := s.rdb.Exists(ctx, s.k.deny(kind, id)).Result()
		found = n > 0
		return err
	})
	return found, err
}

// DenylistChanges returns the change-log entries after cursor in order.
// The cursor is the log's sequence number. limit <= 0 means no limit.
func (s *Store) DenylistChanges(ctx context.Context, after storage.Cursor, limit int) ([]storage.DenyEntry, storage.Cursor, error) {
	var out []storage.DenyEntry
	next := after
	err := s.view(ctx, "denylist changes", func() error {
		by := &goredis.ZRangeBy{Min: "(" + strconv.FormatUint(uint64(after), 10), Max: "+inf"}
		if limit > 0 {
			by.Count = int64(limit)
		}
		members, err := s.rdb.ZRangeByScore(ctx, s.k.denylog(), by).Result()
		if err != nil {
			return err
		}
		for _, m := range members {
			seq, e, err := decodeLogMember(m)
			if err != nil {
				return invalid("denylog entry %q: %w", m, err)
			}
			out = append(out, e)
			next = storage.Cursor(seq)
		}
		return nil
	})
	if err != nil {
		return nil, after, err
	}
	return out, next, nil
}

// Purge removes every record whose expiry is at or before now, as listed by
// the expiry index, in transactions of at most Config.PurgeBatch records.
// It counts codes, refresh tokens, grants, denylist entries and login
// sessions that it found and removed (records that their TTL removed first
// are not counted); index and change-log entries go with their records.
func (s *Store) Purge(ctx context.Context, now time.Time) (int, error) {
	total := 0
	max := strconv.FormatInt(now.UnixMilli(), 10)
	// Scores are milliseconds; a record expiring within now's millisecond
	// but after now is left for the next purge by the per-record check.
	for {
		var members []string
		err := s.view(ctx, "purge", func() error {
			var err error
			members, err = s.rdb.ZRangeByScore(ctx, s.k.expiry(), &goredis.ZRangeBy{Min: "-inf", Max: max, Count: int64(s.cfg.PurgeBatch)}).Result()
			return err
		})
		if err != nil {
			return total, err
		}
		if len(members) == 0 {
			return total, nil
		}
		var n, dropped int
		err = s.update(ctx, "purge", func(t *txn) error {
			var err error
			n, dropped, err = t.purge(members, now)
			return err
		})
		if err != nil {
			return total, err
		}
		total += n
		if len(members) < s.cfg.PurgeBatch {
			return total, nil
		}
		if dropped == 0 {
			// Every candidate was extended meanwhile (its score moved
			// on): nothing left to do at now.
			return total, nil
		}
	}
}

// CreateLoginSession stores ls; an existing session with its ID is
// storage.ErrAlreadyExists.
func (s *Store) CreateLoginSession(ctx context.Context, ls storage.LoginSession) error {
	if err := storage.CheckNewLoginSession(ls); err != nil {
		return err
	}
	return s.update(ctx, "create login session", func(t *txn) error {
		key := s.k.login(ls.ID)
		v, err := t.get1(key)
		if err != nil {
			return err
		}
		if v != nil {
			return storage.ErrAlreadyExists
		}
		if err := t.putJSON(key, ls, ls.ExpiresAt); err != nil {
			return err
		}
		t.index(kindLogin, ls.ID, ls.ExpiresAt)
		return nil
	})
}

// LoginSession returns the login session id, or storage.ErrNotFound.
func (s *Store) LoginSession(ctx context.Context, id string) (storage.LoginSession, error) {
	var out storage.LoginSession
	err := s.view(ctx, "login session", func() error {
		return s.getJSON(ctx, s.k.login(id), "login session "+id, &out)
	})
	return out, err
}

// DeleteLoginSession removes the login session id; an unknown id is no
// error.
func (s *Store) DeleteLoginSession(ctx context.Context, id string) error {
	return s.view(ctx, "delete login session", func() error {
		_, err := s.rdb.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			p.Del(ctx, s.k.login(id))
			p.ZRem(ctx, s.k.expiry(), expiryMember(kindLogin, id))
			return nil
		})
		return err
	})
}

// Ping reports whether Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.view(ctx, "ping", func() error { return s.rdb.Ping(ctx).Err() })
}

func (s *Store) getJSON(ctx context.Context, key, what string, v any) error {
	data, err := s.rdb.Get(ctx, key).Bytes()
	if errors.Is(err, goredis.Nil) {
		return storage.ErrNotFound
	}
	if err != nil {
		return err
	}
	return decode(what, data, v)
}

func decode(what string, data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return invalid("decode %s: %w", what, err)
	}
	return nil
}

// expired reports whether a record with expiry exp has expired at now: a
// record is dead at and after its expiry instant (RFC 7519 §4.1.4).
func expired(exp, now time.Time) bool {
	return !exp.IsZero() && !now.Before(exp)
}

// --- transaction helpers: they keep indexes in step with the records ---

func (t *txn) putJSON(key string, v any, exp time.Time) error {
	data, err := json.Marshal(v)
	if err != nil {
		return invalid("encode %s: %w", key, err)
	}
	t.set(key, string(data), exp)
	return nil
}

func (t *txn) getJSON(key, what string, v any) (bool, error) {
	data, err := t.get1(key)
	if err != nil || data == nil {
		return false, err
	}
	return true, decode(what, []byte(*data), v)
}

// index puts (or moves) a record in the expiry index.
func (t *txn) index(kind byte, id string, exp time.Time) {
	m := expiryMember(kind, id)
	t.queue(func(p goredis.Pipeliner) {
		p.ZAdd(t.ctx, t.s.k.expiry(), goredis.Z{Score: float64(exp.UnixMilli()), Member: m})
	})
}

func (t *txn) unindex(kind byte, id string) {
	m := expiryMember(kind, id)
	t.queue(func(p goredis.Pipeliner) { p.ZRem(t.ctx, t.s.k.expiry(), m) })
}

func expiryMember(kind byte, id string) string { return string(kind) + id }

func (t *txn) code(hash string) (storage.AuthCode, error) {
	var c storage.AuthCode
	ok, err := t.getJSON(t.s.k.code(hash), "code", &c)
	if err == nil && !ok {
		err = storage.ErrNotFound
	}
	return c, err
}

func (t *txn) putCode(c storage.AuthCode) error {
	if err := t.putJSON(t.s.k.code(c.Hash), c, c.ExpiresAt); err != nil {
		return err
	}
	t.index(kindCode, c.Hash, c.ExpiresAt)
	return nil
}

func (t *txn) grant(id string) (storage.Grant, bool, error) {
	var g storage.Grant
	ok, err := t.getJSON(t.s.k.grant(id), "grant "+id, &g)
	return g, ok, err
}

// putGrant creates or updates a grant. Its ExpiresAt never moves earlier
// (it is the latest expiry of its refresh tokens, which Purge relies on to
// remove a grant only after all of them).
func (t *txn) putGrant(g storage.Grant) error {
	if g.ID == "" {
		return invalid("grant ID is empty")
	}
	if g.ExpiresAt.IsZero() {
		return invalid("grant %s: ExpiresAt is zero", g.ID)
	}
	old, ok, err := t.grant(g.ID)
	if err != nil {
		return err
	}
	if ok {
		if old.ExpiresAt.After(g.ExpiresAt) {
			g.ExpiresAt = old.ExpiresAt
		}
		if old.SID != "" && old.SID != g.SID {
			key, id := t.s.k.sidGrants(old.SID), g.ID
			t.queue(func(p goredis.Pipeliner) { p.SRem(t.ctx, key, id) })
		}
	}
	if err := t.putJSON(t.s.k.grant(g.ID), g, g.ExpiresAt); err != nil {
		return err
	}
	if g.SID != "" {
		key, id := t.s.k.sidGrants(g.SID), g.ID
		t.queue(func(p goredis.Pipeliner) { p.SAdd(t.ctx, key, id) })
		t.expireAtLeast(key, g.ExpiresAt)
	}
	t.index(kindGrant, g.ID, g.ExpiresAt)
	return nil
}

// deleteGrant removes a grant, its refresh tokens and its index entries.
// It returns how many records it removed (0 for an unknown grant).
func (t *txn) deleteGrant(id string) (int, error) {
	n, err := t.deleteGrantRefresh(id)
	if err != nil {
		return n, err
	}
	g, ok, err := t.grant(id)
	if err != nil || !ok {
		return n, err
	}
	if g.SID != "" {
		key := t.s.k.sidGrants(g.SID)
		t.queue(func(p goredis.Pipeliner) { p.SRem(t.ctx, key, id) })
	}
	t.unindex(kindGrant, id)
	t.del(t.s.k.grant(id))
	return n + 1, nil
}

func (t *txn) revokeGrant(id string, until time.Time) error {
	if _, err := t.deleteGrant(id); err != nil {
		return err
	}
	return t.deny(storage.DenyEntry{Kind: storage.DenyGrant, ID: id, Until: until})
}

func (t *txn) refreshToken(jti string) (storage.RefreshToken, error) {
	var r storage.RefreshToken
	ok, err := t.getJSON(t.s.k.refresh(jti), "refresh token "+jti, &r)
	if err == nil && !ok {
		err = storage.ErrNotFound
	}
	return r, err
}

// putRefresh allowlists r. Its grant must exist (stored earlier in the same
// transaction or before), so no allowlist record ever names a missing
// grant; the grant's ExpiresAt is raised to r's when r outlives it.
func (t *txn) putRefresh(r storage.RefreshToken) error {
	switch {
	case r.JTI == "":
		return invalid("refresh token JTI is empty")
	case r.GrantID == "":
		return invalid("refresh token %s: GrantID is empty", r.JTI)
	case r.ExpiresAt.IsZero():
		return invalid("refresh token %s: ExpiresAt is zero", r.JTI)
	}
	old, err := t.get1(t.s.k.refresh(r.JTI))
	if err != nil {
		return err
	}
	if old != nil {
		return fmt.Errorf("refresh token %s: %w", r.JTI, storage.ErrAlreadyExists)
	}
	g, ok, err := t.grant(r.GrantID)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("refresh token %s names grant %s, which is not stored: %w", r.JTI, r.GrantID, storage.ErrNotFound)
	}
	if r.ExpiresAt.After(g.ExpiresAt) {
		g.ExpiresAt = r.ExpiresAt
		if err := t.putGrant(g); err != nil {
			return err
		}
	}
	if err := t.putJSON(t.s.k.refresh(r.JTI), r, r.ExpiresAt); err != nil {
		return err
	}
	key, jti := t.s.k.grantRefresh(r.GrantID), r.JTI
	t.queue(func(p goredis.Pipeliner) { p.SAdd(t.ctx, key, jti) })
	t.expireAtLeast(key, r.ExpiresAt)
	t.index(kindRefresh, r.JTI, r.ExpiresAt)
	return nil
}

// deleteRefresh removes one allowlist record and its index entries; an
// unknown jti is no error. It reports whether a record was removed.
func (t *txn) deleteRefresh(jti string) (bool, error) {
	var r storage.RefreshToken
	ok, err := t.getJSON(t.s.k.refresh(jti), "refresh token "+jti, &r)
	if err != nil || !ok {
		return false, err
	}
	key := t.s.k.grantRefresh(r.GrantID)
	t.queue(func(p goredis.Pipeliner) { p.SRem(t.ctx, key, jti) })
	t.unindex(kindRefresh, jti)
	t.del(t.s.k.refresh(jti))
	return true, nil
}

// deleteGrantRefresh removes every refresh token of a grant and reports
// how many records it removed.
func (t *txn) deleteGrantRefresh(grantID string) (int, error) {
	key := t.s.k.grantRefresh(grantID)
	jtis, err := t.members(key)
	if err != nil {
		return 0, err
	}
	keys := make([]string, len(jtis))
	for i, j := range jtis {
		keys[i] = t.s.k.refresh(j)
	}
	if len(keys) > 0 {
		// One round trip for all of them.
		if _, err := t.get(keys...); err != nil {
			return 0, err
		}
	}
	n := 0
	for _, j := range jtis {
		ok, err := t.deleteRefresh(j)
		if err != nil {
			return n, err
		}
		if ok {
			n++
		}
	}
	t.queue(func(p goredis.Pipeliner) { p.Del(t.ctx, key) })
	return n, nil
}

// denyScript appends one entry to the change log inside EXEC, so that the
// sequence number is taken in commit order. The sequence never falls below
// the clock (ms × 1000, ARGV[1]): after Redis restarted empty, new entries
// still sort after the cursors that issuer instances hold. It also indexes
// the log entry for Purge and publishes the entry.
//
// KEYS: denyseq, denylog, expiry. ARGV: floor, "untilNanos kind id",
// until in ms, channel.
const denyScript = `
local seq = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if seq < floor then
  seq = floor
  redis.call('SET', KEYS[1], ARGV[1])
end
local m = string.format('%d', seq) .. ' ' .. ARGV[2]
redis.call('ZADD', KEYS[2], seq, m)
redis.call('ZADD', KEYS[3], ARGV[3], 'l' .. m)
redis.call('PUBLISH', ARGV[4], ARGV[2])
return seq
`

// deny puts e on the denylist and appends it to the change log. An entry
// already there with a later or equal Until is left alone (and not logged
// again); an earlier one is extended.
func (t *txn) deny(e storage.DenyEntry) error {
	if e.Kind != storage.DenyJTI && e.Kind != storage.DenyGrant {
		return invalid("unknown denylist kind %q", e.Kind)
	}
	if e.ID == "" {
		return invalid("denylist entry with empty id")
	}
	key := t.s.k.deny(e.Kind, e.ID)
	v, err := t.get1(key)
	if err != nil {
		return err
	}
	if v != nil {
		if old, err := strconv.ParseInt(*v, 10, 64); err == nil && old >= e.Until.UnixNano() {
			return nil
		}
	}
	t.set(key, strconv.FormatInt(e.Until.UnixNano(), 10), e.Until)
	denyID := string(e.Kind) + ":" + e.ID
	t.index(kindDeny, denyID, e.Until)
	floor := t.s.cfg.Now().UnixMilli() * 1000
	entry := encodeEntry(e)
	untilMS := e.Until.UnixMilli()
	k := t.s.k
	t.queue(func(p goredis.Pipeliner) {
		p.Eval(t.ctx, denyScript, []string{k.denyseq(), k.denylog(), k.expiry()}, floor, entry, untilMS, k.channel())
	})
	return nil
}

// encodeEntry is "untilNanos kind id": the log member after its sequence,
// and the pub/sub message.
func encodeEntry(e storage.DenyEntry) string {
	return strconv.FormatInt(e.Until.UnixNano(), 10) + " " + string(e.Kind) + " " + e.ID
}

func decodeEntry(s string) (storage.DenyEntry, error) {
	f := strings.SplitN(s, " ", 3)
	if len(f) != 3 || f[1] == "" {
		return storage.DenyEntry{}, errors.New("want \"until kind id\"")
	}
	ns, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return storage.DenyEntry{}, fmt.Errorf("until: %w", err)
	}
	// Only the form encodeEntry writes ("-01" or "+1" would decode to a
	// record that encodes otherwise: a member no writer made).
	if strconv.FormatInt(ns, 10) != f[0] {
		return storage.DenyEntry{}, errors.New("until: not a canonical integer")
	}
	return storage.DenyEntry{Kind: storage.DenyKind(f[1]), ID: f[2], Until: time.Unix(0, ns).UTC()}, nil
}

// decodeLogMember splits "seq untilNanos kind id".
func decodeLogMember(m string) (uint64, storage.DenyEntry, error) {
	seqStr, rest, ok := strings.Cut(m, " ")
	if !ok {
		return 0, storage.DenyEntry{}, errors.New("no sequence")
	}
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	if err != nil {
		return 0, storage.DenyEntry{}, fmt.Errorf("sequence: %w", err)
	}
	if strconv.FormatUint(seq, 10) != seqStr {
		return 0, storage.DenyEntry{}, errors.New("sequence: not a canonical integer")
	}
	e, err := decodeEntry(rest)
	return seq, e, err
}

func (t *txn) storeIssued(iss storage.Issued) error {
	if iss.Grant != nil {
		if err := t.putGrant(*iss.Grant); err != nil {
			return err
		}
	}
	if iss.Refresh != nil {
		if err := t.putRefresh(*iss.Refresh); err != nil {
			return err
		}
	}
	return nil
}

// purge removes the records named by expiry-index members whose own expiry
// is at or before now. It returns how many records it removed and how many
// index members it dropped; a member whose record now expires later
// (extended after the index was read) stays.
func (t *txn) purge(members []string, now time.Time) (removed, dropped int, err error) {
	// Read every record in one round trip first.
	keys := make([]string, 0, len(members))
	for _, m := range members {
		if k := t.recordKey(m); k != "" {
			keys = append(keys, k)
		}
	}
	if len(keys) > 0 {
		if _, err := t.get(keys...); err != nil {
			return 0, 0, err
		}
	}
	for _, m := range members {
		if m == "" {
			continue
		}
		id := m[1:]
		var n int
		var live bool
		switch m[0] {
		case kindCode:
			var c storage.AuthCode
			ok, err := t.getJSON(t.s.k.code(id), "code", &c)
			if err != nil {
				return removed, dropped, err
			}
			live = ok && !expired(c.ExpiresAt, now)
			if ok && !live {
				t.del(t.s.k.code(id))
				n = 1
			}
		case kindRefresh:
			var r storage.RefreshToken
			ok, err := t.getJSON(t.s.k.refresh(id), "refresh token "+id, &r)
			if err != nil {
				return removed, dropped, err
			}
			live = ok && !expired(r.ExpiresAt, now)
			if ok && !live {
				if _, err := t.deleteRefresh(id); err != nil {
					return removed, dropped, err
				}
				n = 1
			}
		case kindGrant:
			g, ok, err := t.grant(id)
			if err != nil {
				return removed, dropped, err
			}
			live = ok && !expired(g.ExpiresAt, now)
			if ok && !live {
				if n, err = t.deleteGrant(id); err != nil {
					return removed, dropped, err
				}
			}
		case kindDeny:
			kind, did, _ := strings.Cut(id, ":")
			key := t.s.k.deny(storage.DenyKind(kind), did)
			v, err := t.get1(key)
			if err != nil {
				return removed, dropped, err
			}
			if v != nil {
				ns, perr := strconv.ParseInt(*v, 10, 64)
				live = perr == nil && now.Before(time.Unix(0, ns))
				if !live {
					t.del(key)
					n = 1
				}
			}
		case kindLog:
			// Log entries never change: the score is their Until.
			lm := id
			t.queue(func(p goredis.Pipeliner) { p.ZRem(t.ctx, t.s.k.denylog(), lm) })
		case kindLogin:
			var ls storage.LoginSession
			ok, err := t.getJSON(t.s.k.login(id), "login session "+id, &ls)
			if err != nil {
				return removed, dropped, err
			}
			live = ok && !expired(ls.ExpiresAt, now)
			if ok && !live {
				t.del(t.s.k.login(id))
				n = 1
			}
		default:
			// Not ours to interpret: drop the stray member.
		}
		removed += n
		if !live {
			mm := m
			t.queue(func(p goredis.Pipeliner) { p.ZRem(t.ctx, t.s.k.expiry(), mm) })
			dropped++
		}
	}
	return removed, dropped, nil
}

// recordKey is the record key an expiry-index member names ("" for log
// entries, which live in the log itself).
func (t *txn) recordKey(m string) string {
	if m == "" {
		return ""
	}
	id := m[1:]
	switch m[0] {
	case kindCode:
		return t.s.k.code(id)
	case kindRefresh:
		return t.s.k.refresh(id)
	case kindGrant:
		return t.s.k.grant(id)
	case kindDeny:
		kind, did, _ := strings.Cut(id, ":")
		return t.s.k.deny(storage.DenyKind(kind), did)
	case kindLogin:
		return t.s.k.login(id)
	}
	return ""
}
