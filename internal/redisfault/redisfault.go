// Package redisfault tells the faults of a Redis deployment from the
// answers of the stores built on it, as internal/boltfault does for the
// bbolt data file.
//
// A store on Redis answers a request from what Redis holds: not found, a
// lost optimistic transaction (retried), a script's own result. Anything
// else is a fault of the deployment: a refused, reset or timed-out
// connection, a closed client or an exhausted pool, a deadline, a TLS
// failure, or a server that cannot serve now (loading its data set, a
// read-only replica after a failover, a master down, a Cluster without
// quorum or in a resharding, a busy script, missing replicas for WAIT). Is
// recognises them so that each store maps them to its "unavailable"
// sentinel in one place and callers answer 503, never 500; a command the
// server refuses for what it is (a wrong type, a syntax error) is a bug,
// not a fault.
package redisfault

import (
	"context"
	"errors"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// serverFaults are the prefixes of the Redis error replies that mean the
// server cannot serve now, not that the command is wrong.
var serverFaults = [...]string{"LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY ", "NOREPLICAS"}

// Is reports whether err, from a go-redis call, is a fault of the Redis
// deployment. The caller's own cancel (context.Canceled), a lost WATCH
// (goredis.TxFailedErr: retry) and redis.Nil (no such key) are not.
func Is(err error) bool {
	switch {
	case err == nil,
		errors.Is(err, context.Canceled),
		errors.Is(err, goredis.TxFailedErr),
		errors.Is(err, goredis.Nil):
		return false
	}
	var rerr goredis.Error
	if errors.As(err, &rerr) {
		msg := rerr.Error()
		for _, p := range serverFaults {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		return false
	}
	// Everything else go-redis returns comes from the connection (io.EOF,
	// a reset or refused dial, TLS, a pool timeout, ErrClosed) or is a
	// deadline: Redis could not serve.
	return true
}
