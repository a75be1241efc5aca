package redis

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/internal/redistest"
	"github.com/bffgate/bffgate/issuer/storage"
)

// Generated secrets survive a Redis that loses its data while instances
// run: the Keeper of an instance that holds one puts it back, so an
// instance starting afterwards reads the shared value instead of
// generating a new one. An instance that generated its own first is
// reported, naming the secret, never its value.
func TestKeeperPutsBackLostSecrets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := redistest.Client(t)
	prefix := redistest.Prefix(t, c, "keeper:")
	var logs bytes.Buffer
	open := func() *storage.Keeper {
		s, err := New(c, Config{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		return storage.NewKeeper(s, slog.New(slog.NewTextHandler(&logs, nil)), 0)
	}
	gen := func(v string) func() ([]byte, error) { return func() ([]byte, error) { return []byte(v), nil } }
	lose := func() {
		t.Helper()
		var keys []string
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) == 0 {
			t.Fatal("no key of the store found in Redis")
		}
		if err := c.Del(ctx, keys...).Err(); err != nil {
			t.Fatal(err)
		}
	}

	a := open()
	first, err := a.Secret(ctx, "gateway/cookie-key/hash", gen("value-of-a"))
	if err != nil || string(first) != "value-of-a" {
		t.Fatalf("Secret: %q %v", first, err)
	}
	if n, err := a.Restore(ctx); n != 0 || err != nil {
		t.Fatalf("Restore with nothing lost: %d %v, want 0", n, err)
	}

	lose()
	if n, err := a.Restore(ctx); n != 1 || err != nil {
		t.Fatalf("Restore after the loss: %d %v, want 1 secret put back", n, err)
	}
	b := open() // an instance (re)starting after the put-back
	if got, err := b.Secret(ctx, "gateway/cookie-key/hash", gen("value-of-b")); err != nil || string(got) != "value-of-a" {
		t.Fatalf("a new instance reads %q (%v), want the value the running one put back", got, err)
	}

	// B restarts on the empty store before A puts it back: B generates.
	lose()
	b = open()
	if got, _ := b.Secret(ctx, "gateway/cookie-key/hash", gen("value-of-b")); string(got) != "value-of-b" {
		t.Fatalf("generated %q", got)
	}
	if n, err := a.Restore(ctx); n != 0 || err != nil {
		t.Fatalf("Restore over another instance's value: %d %v, want nothing written", n, err)
	}
	if _, err := a.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if strings.Count(out, "another value of a generated secret") != 1 || !strings.Contains(out, "gateway/cookie-key/hash") {
		t.Errorf("the disagreement is not logged once, naming the secret:\n%s", out)
	}
	if strings.Contains(out, "value-of-") {
		t.Errorf("a secret's value is in the log:\n%s", out)
	}
}

// An instance that restarts at once after the loss waits its settle time
// before generating, and so reads the value a running instance puts back
// meanwhile instead of generating its own.
func TestKeeperSettleLetsRunningInstancesRestore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := redistest.Client(t)
	prefix := redistest.Prefix(t, c, "keeper-settle:")
	open := func(settle time.Duration) *storage.Keeper {
		s, err := New(c, Config{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		return storage.NewKeeper(s, slog.New(slog.DiscardHandler), settle)
	}
	a := open(0)
	if _, err := a.Secret(ctx, "issuer/client/bffgate", func() ([]byte, error) { return []byte("shared"), nil }); err != nil {
		t.Fatal(err)
	}
	var keys []string
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if len(keys) == 0 || c.Del(ctx, keys...).Err() != nil {
		t.Fatal("could not empty the store")
	}

	restored := make(chan error, 1)
	go func() {
		time.Sleep(100 * time.Millisecond) // the running instance's next round
		_, err := a.Restore(ctx)
		restored <- err
	}()
	b := open(time.Second)
	got, err := b.Secret(ctx, "issuer/client/bffgate", func() ([]byte, error) { return []byte("generated-by-b"), nil })
	if err != nil || string(got) != "shared" {
		t.Fatalf("an instance starting right after the loss reads %q (%v), want the value the running one put back", got, err)
	}
	if err := <-restored; err != nil {
		t.Fatal(err)
	}
}
