// Package redistest gives tests a client on the real Redis named by
// BFFGATE_TEST_REDIS_URL and a key prefix of their own in it. Where the
// variable is unset the test is skipped with a message; where it is set
// and Redis does not answer the test fails (CI sets it).
//
// The shared Redis is never flushed: each test writes under a random
// prefix, and its keys are removed when it ends.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	goredis "github.com/redis/go-redis/v9"
)

// URL returns BFFGATE_TEST_REDIS_URL, skipping tb when it is unset.
func URL(tb testing.TB) string {
	tb.Helper()
	url := os.Getenv("BFFGATE_TEST_REDIS_URL")
	if url == "" {
		tb.Skip("BFFGATE_TEST_REDIS_URL is unset; set it (e.g. redis://127.0.0.1:6379/0) to run the Redis tests")
	}
	return url
}

// Client returns a client of its own on BFFGATE_TEST_REDIS_URL, closed
// when tb ends. It skips tb when the variable is unset and fails it when
// Redis does not answer.
func Client(tb testing.TB) *goredis.Client {
	tb.Helper()
	url := URL(tb)
	opt, err := goredis.ParseURL(url)
	if err != nil {
		tb.Fatalf("BFFGATE_TEST_REDIS_URL: %v", err)
	}
	c := goredis.NewClient(opt)
	tb.Cleanup(func() { c.Close() })
	if err := c.Ping(context.Background()).Err(); err != nil {
		tb.Fatalf("Redis at BFFGATE_TEST_REDIS_URL (%s) does not answer: %v", url, err)
	}
	return c
}

// Prefix returns "bffgate-test:<random>:" plus suffix, and removes every
// key under it from c when tb ends.
func Prefix(tb testing.TB, c goredis.UniversalClient, suffix string) string {
	tb.Helper()
	b := make([]byte, 8)
	rand.Read(b)
	p := "bffgate-test:" + hex.EncodeToString(b) + ":" + suffix
	tb.Cleanup(func() {
		ctx := context.Background()
		var keys []string
		iter := c.Scan(ctx, 0, p+"*", 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			c.Del(ctx, keys...)
		}
	})
	return p
}
