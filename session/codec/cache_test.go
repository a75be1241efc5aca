package codec

import (
	"errors"
	"testing"
	"time"

	"github.com/bffgate/bffgate/session"
)

func TestOpenCache(t *testing.T) {
	t.Parallel()
	tk, err := NewTicket()
	if err != nil {
		t.Fatal(err)
	}
	s := &session.Session{Subject: "alice", SID: "sid-1", AccessToken: "at-1", Claims: []byte(`{"name":"Alice"}`),
		Created: time.Unix(1700000000, 0), LastSeen: time.Unix(1700000000, 0)}
	rec, err := Seal(tk, s)
	if err != nil {
		t.Fatal(err)
	}
	c := NewOpenCache(2)
	for i := range 3 {
		got, err := c.Open(tk, rec)
		if err != nil || got.AccessToken != "at-1" || string(got.Claims) != `{"name":"Alice"}` || got.ID != tk.ID() {
			t.Fatalf("open %d: %+v, %v", i, got, err)
		}
		got.Claims[0] = 'X' // a caller's change must not reach the cache
		got.AccessToken = "changed"
	}

	// A new record (an Update) is opened afresh.
	s.AccessToken = "at-2"
	rec2, _ := Seal(tk, s)
	if got, err := c.Open(tk, rec2); err != nil || got.AccessToken != "at-2" {
		t.Fatalf("after update: %+v, %v", got, err)
	}
	// The same id with another key opens nothing, cached or not.
	other, _ := NewTicket()
	other.id = tk.id
	if _, err := c.Open(other, rec2); !errors.Is(err, ErrSealed) {
		t.Fatalf("wrong key: %v, want ErrSealed", err)
	}
	// A tampered record is refused even though its id is cached.
	bad := append([]byte(nil), rec2...)
	bad[len(bad)-1] ^= 1
	if _, err := c.Open(tk, bad); !errors.Is(err, ErrSealed) {
		t.Fatalf("tampered: %v, want ErrSealed", err)
	}
	// Bounded.
	for range 10 {
		k, _ := NewTicket()
		r, _ := Seal(k, s)
		if _, err := c.Open(k, r); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.m); n > 2 {
		t.Fatalf("cache holds %d entries, max 2", n)
	}
}

func BenchmarkOpen(b *testing.B) {
	tk, _ := NewTicket()
	s := &session.Session{Subject: "alice", SID: "sid-1", AccessToken: "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln", Claims: []byte(`{"name":"Alice"}`)}
	rec, _ := Seal(tk, s)
	b.Run("uncached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Open(tk, rec); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		c := NewOpenCache(0)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Open(tk, rec); err != nil {
				b.Fatal(err)
			}
		}
	})
}
