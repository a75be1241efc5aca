package main

import (
	"context"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// redisTimeouts are the redis section's bounds on one call.
type redisTimeouts struct{ dial, read, write time.Duration }

// redisTimeoutsOf reads them from the configuration; a zero value (a
// Redis section built in a test without defaults) means one second.
func redisTimeoutsOf(cfg Redis) redisTimeouts {
	or1s := func(d Duration) time.Duration {
		if d <= 0 {
			return time.Second
		}
		return d.D()
	}
	return redisTimeouts{dial: or1s(cfg.DialTimeout), read: or1s(cfg.ReadTimeout), write: or1s(cfg.WriteTimeout)}
}

// pool is how long a call waits for a free pooled connection: as long as
// it would wait for an answer.
func (t redisTimeouts) pool() time.Duration { return t.read }

// budget is the most one call (one command, pipeline or transaction) may
// take, its retries included: the longest of the three timeouts.
func (t redisTimeouts) budget() time.Duration { return max(t.dial, t.read, t.write) }

// redisBudget bounds every call, retries included, by d. go-redis retries
// a command that timed out (three times by default, with backoff), so a
// Redis that accepts connections but never answers (SIGSTOP, a frozen VM)
// cost one request 5 to 10 s per command with its defaults, and read_timeout
// times four with ours. A deadline on the call's context, which go-redis
// honours with ContextTimeoutEnabled, ends the retries with the budget;
// retries on a broken pooled connection (EOF after a Redis restart) still
// happen within it, since they are fast. A caller's earlier deadline
// stands.
type redisBudget struct{ d time.Duration }

var _ goredis.Hook = redisBudget{}

// DialHook leaves dials alone: DialTimeout bounds them, and the deadline
// of the call that needed the connection bounds that call.
func (b redisBudget) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (b redisBudget) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		ctx, cancel := b.bound(ctx)
		defer cancel()
		return next(ctx, cmd)
	}
}

func (b redisBudget) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		ctx, cancel := b.bound(ctx)
		defer cancel()
		return next(ctx, cmds)
	}
}

func (b redisBudget) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= b.d {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, b.d)
}
