package main

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// frozenRedis accepts connections and reads commands but never answers,
// as a redis-server stopped with SIGSTOP does once the kernel has accepted
// the connection. It counts the commands it was sent.
func frozenRedis(t *testing.T) (addr string, commands *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	commands = &atomic.Int32{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if len(line) > 0 && line[0] == '*' { // a RESP array: one command
						commands.Add(1)
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), commands
}

// A Redis that never answers costs one call one read_timeout: go-redis's
// retries of a timed-out command end with the call's budget, so the frozen
// server is sent the command once, not once per retry.
func TestRedisBudgetFrozen(t *testing.T) {
	t.Parallel()
	addr, commands := frozenRedis(t)
	cfg := defaultConfig().Redis
	cfg.URL = "redis://" + addr + "/0"
	cfg.ReadTimeout = Duration(200 * time.Millisecond)
	cfg.WriteTimeout = Duration(200 * time.Millisecond)
	cfg.DialTimeout = Duration(200 * time.Millisecond)
	client, err := newRedis(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	err = client.Get(context.Background(), "k").Err()
	var ne net.Error
	if err == nil || !(errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)) {
		t.Fatalf("GET on a frozen Redis: %v, want a timeout", err)
	}
	if n := commands.Load(); n != 1 {
		t.Errorf("the frozen Redis was sent %d commands for one GET, want 1 (no retry past the call's budget)", n)
	}
	// A pipeline (the stores' MULTI/EXEC) is bounded the same way.
	commands.Store(0)
	_, err = client.TxPipelined(context.Background(), func(p goredis.Pipeliner) error {
		p.Get(context.Background(), "k")
		return nil
	})
	if err == nil {
		t.Fatal("MULTI/EXEC on a frozen Redis succeeded")
	}
	if n := commands.Load(); n > 3 {
		t.Errorf("the frozen Redis was sent %d commands for one MULTI/GET/EXEC, want at most 3 (no retry past the call's budget)", n)
	}
}

func TestRedisTimeoutsConfigured(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig(writeFile(t, "redis:\n  url: redis://127.0.0.1:6379/0\n  read_timeout: 250ms\n  sentinel_addrs: [127.0.0.1:26379]\n  master_name: m\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	o := failoverOptions(cfg.Redis, &goredis.Options{})
	if o.ReadTimeout != 250*time.Millisecond || o.DialTimeout != time.Second || o.WriteTimeout != time.Second || o.PoolTimeout != 250*time.Millisecond || !o.ContextTimeoutEnabled {
		t.Errorf("sentinel options: dial %v read %v write %v pool %v context %t; want 1s, 250ms, 1s, 250ms, true",
			o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout, o.ContextTimeoutEnabled)
	}
	if _, err := loadConfig(writeFile(t, "redis:\n  dial_timeout: 0s\n"), nil); err == nil || !strings.Contains(err.Error(), "redis.dial_timeout") {
		t.Errorf("redis.dial_timeout: 0s: %v, want an error naming redis.dial_timeout", err)
	}
}

// TestRedisPipelineBuffers: the connections go-redis keeps for pipelines
// and transactions have the main pool's buffer size, not its 128 KiB
// default each way, for a single server and for Sentinel.
func TestRedisPipelineBuffers(t *testing.T) {
	cfg := defaultConfig().Redis
	cfg.URL = "redis://127.0.0.1:1/0"
	client, err := newRedis(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	o := client.(*goredis.Client).Options()
	if o.PipelineReadBufferSize != pipelineBufferSize || o.PipelineWriteBufferSize != pipelineBufferSize {
		t.Errorf("single server: pipeline buffers %d / %d, want %d", o.PipelineReadBufferSize, o.PipelineWriteBufferSize, pipelineBufferSize)
	}
	cfg.SentinelAddrs, cfg.MasterName = []string{"127.0.0.1:1"}, "mymaster"
	if f := failoverOptions(cfg, &goredis.Options{}); f.PipelineReadBufferSize != pipelineBufferSize || f.PipelineWriteBufferSize != pipelineBufferSize {
		t.Errorf("Sentinel: pipeline buffers %d / %d, want %d", f.PipelineReadBufferSize, f.PipelineWriteBufferSize, pipelineBufferSize)
	}
}
