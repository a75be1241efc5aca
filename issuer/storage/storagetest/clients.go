package storagetest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/bffgate/bffgate/issuer/storage"
)

func testRegistrations(t *testing.T, s storage.Store) {
	ctx := context.Background()
	now := base()
	reg := storage.Registration{ClientID: "dyn-1", Metadata: []byte(`{"client_name":"x"}`), TokenHash: []byte("0123456789abcdef0123456789abcdef"),
		Created: now, LastUsed: now, ExpiresAt: now.Add(time.Hour)}
	if err := s.CreateRegistration(ctx, reg); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRegistration(ctx, reg); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second create = %v; want ErrExists", err)
	}
	got, err := s.Registration(ctx, "dyn-1", now)
	if err != nil || string(got.Metadata) != string(reg.Metadata) || string(got.TokenHash) != string(reg.TokenHash) || !got.ExpiresAt.Equal(reg.ExpiresAt) {
		t.Fatalf("read back %+v, %v", got, err)
	}
	if _, err := s.Registration(ctx, "nope", now); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("unknown = %v; want ErrNotFound", err)
	}
	// A use moves the expiry: the purge at the old expiry keeps it.
	if err := s.TouchRegistration(ctx, "dyn-1", now.Add(30*time.Minute), now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Purge(ctx, now.Add(90*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Registration(ctx, "dyn-1", now.Add(90*time.Minute)); err != nil || !got.LastUsed.Equal(now.Add(30*time.Minute)) {
		t.Fatalf("after touch and purge: %+v, %v", got, err)
	}
	if _, err := s.Registration(ctx, "dyn-1", now.Add(3*time.Hour)); !errors.Is(err, storage.ErrExpired) {
		t.Fatalf("expired, not purged = %v; want ErrExpired", err)
	}
	n, err := s.Purge(ctx, now.Add(3*time.Hour))
	if err != nil || n < 1 {
		t.Fatalf("purge = %d, %v", n, err)
	}
	if _, err := s.Registration(ctx, "dyn-1", now); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("after purge = %v; want ErrNotFound", err)
	}
	if err := s.TouchRegistration(ctx, "dyn-1", now, now.Add(time.Hour)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("touch of a purged one = %v", err)
	}
	// Delete, and a delete of nothing.
	reg.ClientID = "dyn-2"
	if err := s.CreateRegistration(ctx, reg); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRegistration(ctx, "dyn-2"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRegistration(ctx, "dyn-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Registration(ctx, "dyn-2", now); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("after delete = %v", err)
	}
	if err := s.CreateRegistration(ctx, storage.Registration{ClientID: "", ExpiresAt: now}); err == nil {
		t.Fatal("empty client id accepted")
	}
}

func testRegistrationsConcurrent(t *testing.T, s storage.Store) {
	ctx := context.Background()
	now := base()
	var wg sync.WaitGroup
	var mu sync.Mutex
	created := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.CreateRegistration(ctx, storage.Registration{ClientID: "same", Created: now, ExpiresAt: now.Add(time.Hour)})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created++
			case !errors.Is(err, storage.ErrExists):
				t.Errorf("create: %v", err)
			}
		}()
	}
	wg.Wait()
	if created != 1 {
		t.Fatalf("%d creates of one id succeeded; want 1", created)
	}
}

func testConsents(t *testing.T, s storage.Store) {
	ctx := context.Background()
	now := base()
	const client = "https://client.example.test/meta.json"
	if c, err := s.Consent(ctx, "alice", client, now); err != nil || c.Covers("", nil) {
		t.Fatalf("no consent yet: %+v, %v", c, err)
	}
	if err := s.AddConsent(ctx, "alice", client, "https://mcp.example.test/mcp", []string{"openid", "mcp:tools"}, now, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.AddConsent(ctx, "alice", client, "https://mcp.example.test/mcp", []string{"mcp:admin"}, now, now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	c, err := s.Consent(ctx, "alice", client, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		resource string
		scopes   []string
		want     bool
	}{
		{"https://mcp.example.test/mcp", []string{"openid", "mcp:tools", "mcp:admin"}, true},
		{"https://mcp.example.test/mcp", []string{"mcp:tools"}, true},
		{"https://mcp.example.test/mcp", []string{"mcp:other"}, false},
		{"https://other.example.test/", []string{"openid"}, false},
		{"", []string{"openid"}, false},
	} {
		if got := c.Covers(tc.resource, tc.scopes); got != tc.want {
			t.Errorf("Covers(%q, %v) = %v", tc.resource, tc.scopes, got)
		}
	}
	// Another user, another client: nothing.
	if c, _ := s.Consent(ctx, "bob", client, now); c.Covers("https://mcp.example.test/mcp", nil) {
		t.Error("bob has alice's consent")
	}
	if c, _ := s.Consent(ctx, "alice", "other", now); c.Covers("https://mcp.example.test/mcp", nil) {
		t.Error("another client has the consent")
	}
	// The first expiry was moved by the second add; past the second the
	// consent is gone, and purged.
	if c, _ := s.Consent(ctx, "alice", client, now.Add(90*time.Minute)); !c.Covers("https://mcp.example.test/mcp", []string{"mcp:tools"}) {
		t.Error("consent lost at the first expiry")
	}
	if c, _ := s.Consent(ctx, "alice", client, now.Add(3*time.Hour)); c.Covers("https://mcp.example.test/mcp", nil) {
		t.Error("expired consent still covers")
	}
	if n, err := s.Purge(ctx, now.Add(3*time.Hour)); err != nil || n < 1 {
		t.Fatalf("purge = %d, %v", n, err)
	}
	// Revoke.
	if err := s.AddConsent(ctx, "alice", client, "", []string{"openid"}, now, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeConsent(ctx, "alice", client); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Consent(ctx, "alice", client, now); c.Covers("", []string{"openid"}) {
		t.Error("revoked consent still covers")
	}
	if err := s.RevokeConsent(ctx, "alice", client); err != nil {
		t.Fatalf("revoke of nothing: %v", err)
	}
	if err := s.AddConsent(ctx, "alice", client, "", nil, now, now); err == nil {
		t.Error("a consent expiring at once was accepted")
	}
}
