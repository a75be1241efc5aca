package redis

import (
	"context"
	"fmt"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/issuer/storage"
)

// The login throttle's state of one key is a hash: c (failures in the
// current window), s (the window's start, ms; 0: none open), k (lockouts
// so far), l (end of the latest lockout, ms), e (when the state is
// forgotten, ms). Its Redis TTL is e plus Config.TTLGrace, so nothing
// needs purging; e itself decides, against the caller's clock.
//
// Counting is a Lua script rather than the rules' optimistic transaction
// (storage.Rules on the Engine, which writes the same hash): under a
// guessing attack many requests hit one key at once, and WATCH would make
// them retry each other into ErrConflict, while a script runs each update
// whole, in turn, in one round trip. It is an optimisation only: the
// contract suite runs over both (TestStore and TestRulesOnEngine).

// recordFailureScript counts one failure (storage.Store.RecordLoginFailure).
// The lockout length must match storage.LoginPolicy.LockoutAfter.
//
// KEYS: the key's hash. ARGV: now, window, max failures, lockout, max
// lockout, TTL grace (times in ms). Returns {count, lockouts, locked
// until, started}.
var recordFailureScript = goredis.NewScript(`
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lockout, maxLockout, grace = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local v = redis.call('HMGET', KEYS[1], 'c', 's', 'k', 'l', 'e')
local c, s, k, l, e = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0, tonumber(v[5]) or 0
if e <= now then
  c, s, k, l = 0, 0, 0, 0
end
if now < l then
  return {c, k, l, 0}
end
if s == 0 or now >= s + window then
  c, s = 0, now
end
c = c + 1
local started = 0
if c >= limit then
  local wait = lockout
  for i = 1, k do
    if wait >= maxLockout / 2 then
      wait = maxLockout
      break
    end
    wait = wait * 2
  end
  if wait > maxLockout then
    wait = maxLockout
  end
  l = now + wait
  k = k + 1
  c, s, started = 0, 0, 1
end
e = l + window
if s ~= 0 and s + window > e then
  e = s + window
end
local function int(x) return string.format('%d', x) end
redis.call('HSET', KEYS[1], 'c', int(c), 's', int(s), 'k', int(k), 'l', int(l), 'e', int(e))
redis.call('PEXPIREAT', KEYS[1], int(e + grace))
return {c, k, l, started}
`)

// resetScript forgets a key unless it is locked
// (storage.Store.ResetLoginFailures).
//
// KEYS: the key's hash. ARGV: now (ms). Returns {count, lockouts, locked
// until}: the lock, or zeros after the reset.
var resetScript = goredis.NewScript(`
local now = tonumber(ARGV[1])
local v = redis.call('HMGET', KEYS[1], 'c', 'k', 'l', 'e')
local c, k, l, e = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0
if now < e and now < l then
  return {c, k, l}
end
redis.call('DEL', KEYS[1])
return {0, 0, 0}
`)

// LoginFailures returns the state of key at now.
func (s *Store) LoginFailures(ctx context.Context, key string, now time.Time) (storage.LoginFailures, error) {
	if err := storage.CheckLoginKey(key); err != nil {
		return storage.LoginFailures{}, err
	}
	var out storage.LoginFailures
	err := s.view(ctx, "login failures", func() error {
		v, err := s.rdb.HMGet(ctx, s.k.loginFailures(key), "c", "k", "l", "e").Result()
		if err != nil {
			return fault("login failures", err)
		}
		n := make([]int64, len(v))
		for i, x := range v {
			if x == nil {
				continue
			}
			str, _ := x.(string)
			if n[i], err = strconv.ParseInt(str, 10, 64); err != nil {
				return fmt.Errorf("redis: login failures of %s: field %d is %q, not a number", key, i, str)
			}
		}
		if now.UnixMilli() >= n[3] {
			return nil // missing (e is 0) or expired
		}
		out = loginState(n[0], n[1], n[2])
		return nil
	})
	return out, err
}

// RecordLoginFailure counts one failure against key in one script run.
func (s *Store) RecordLoginFailure(ctx context.Context, key string, now time.Time, p storage.LoginPolicy) (storage.LoginFailures, error) {
	if err := storage.CheckLoginKey(key); err != nil {
		return storage.LoginFailures{}, err
	}
	if err := p.Validate(); err != nil {
		return storage.LoginFailures{}, err
	}
	var out storage.LoginFailures
	err := s.view(ctx, "record login failure", func() error {
		v, err := recordFailureScript.Run(ctx, s.rdb, []string{s.k.loginFailures(key)},
			now.UnixMilli(), p.Window.Milliseconds(), p.MaxFailures, p.Lockout.Milliseconds(), p.MaxLockout.Milliseconds(),
			s.cfg.TTLGrace.Milliseconds()).Int64Slice()
		if err != nil {
			return fault("record login failure", err)
		}
		if len(v) != 4 {
			return fmt.Errorf("redis: record login failure: the script returned %d values, want 4", len(v))
		}
		out = loginState(v[0], v[1], v[2])
		out.Started = v[3] == 1
		return nil
	})
	return out, err
}

// ResetLoginFailures deletes key's state unless key is locked at now.
func (s *Store) ResetLoginFailures(ctx context.Context, key string, now time.Time) (storage.LoginFailures, error) {
	if err := storage.CheckLoginKey(key); err != nil {
		return storage.LoginFailures{}, err
	}
	var out storage.LoginFailures
	err := s.view(ctx, "reset login failures", func() error {
		v, err := resetScript.Run(ctx, s.rdb, []string{s.k.loginFailures(key)}, now.UnixMilli()).Int64Slice()
		if err != nil {
			return fault("reset login failures", err)
		}
		if len(v) != 3 {
			return fmt.Errorf("redis: reset login failures: the script returned %d values, want 3", len(v))
		}
		out = loginState(v[0], v[1], v[2])
		return nil
	})
	return out, err
}

// view runs fn unless ctx is already done; fn classifies its errors.
func (s *Store) view(ctx context.Context, op string, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redis: %s: %w", op, err)
	}
	return fn()
}

func loginState(count, lockouts, lockedUntilMS int64) storage.LoginFailures {
	f := storage.LoginFailures{Count: int(count), Lockouts: int(lockouts)}
	if lockedUntilMS > 0 {
		f.LockedUntil = time.UnixMilli(lockedUntilMS).UTC()
	}
	return f
}
