package redisfault

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/internal/redistest"
)

// A real client on a port nothing listens on gives a real connection
// error; a closed client its own.
func TestIs(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	c := goredis.NewClient(&goredis.Options{Addr: addr, DialTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	dialErr := c.Ping(context.Background()).Err()
	if dialErr == nil {
		t.Fatal("PING to a closed port succeeded")
	}
	closed := goredis.NewClient(&goredis.Options{Addr: addr})
	closed.Close()
	closedErr := closed.Ping(context.Background()).Err()

	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"no such key", goredis.Nil, false},
		{"lost watch", goredis.TxFailedErr, false},
		{"caller's cancel", fmt.Errorf("get: %w", context.Canceled), false},
		{"deadline", context.DeadlineExceeded, true},
		{"refused dial", dialErr, true},
		{"closed client", closedErr, true},
		{"connection reset", io.EOF, true},
		{"pool timeout", goredis.ErrPoolTimeout, true},
		{"closed client sentinel", goredis.ErrClosed, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := Is(c.err); got != c.want {
				t.Errorf("Is(%v) = %v, want %v", c.err, got, c.want)
			}
		})
	}
}

// Server replies, read from a real Redis: a command refused for what it is
// is no fault; a replica's READONLY is.
func TestServerReplies(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	ctx := context.Background()
	wrong := c.Do(ctx, "nosuchcommand").Err()
	if wrong == nil || Is(wrong) {
		t.Errorf("an unknown command: Is(%v) = true, want false (a bug, not a fault)", wrong)
	}
	// READONLY and friends as the server sends them: go-redis's parser
	// makes the same error type from any reply.
	script := goredis.NewScript(`return redis.error_reply('READONLY You cannot write against a read only replica.')`)
	ro := script.Run(ctx, c, nil).Err()
	var rerr goredis.Error
	if !errors.As(ro, &rerr) || !Is(ro) {
		t.Errorf("a READONLY reply: Is(%v) = false, want true", ro)
	}
}
