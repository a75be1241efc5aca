package tokens

import (
	"fmt"
	"testing"
	"time"
)

// TestExchangeCacheSweeps: entries of ended or refreshed sessions go as
// new ones come in; a live entry is served only for its subject token.
func TestExchangeCacheSweeps(t *testing.T) {
	t.Parallel()
	var c exchangeCache
	now := time.Now()
	for i := range 1000 {
		c.put(fmt.Sprintf("old-%d", i), exchanged{subject: "s", token: "t", until: now.Add(time.Second)}, now)
	}
	later := now.Add(2 * time.Second)
	for i := range 200 {
		c.put(fmt.Sprintf("new-%d", i), exchanged{subject: "s", token: "t", until: later.Add(time.Minute)}, later)
	}
	c.mu.Lock()
	n := len(c.m)
	c.mu.Unlock()
	if n > 400 {
		t.Fatalf("%d entries after 1000 expired and 200 live ones, want the expired swept", n)
	}
	if tok, ok := c.get("new-1", "s", later); !ok || tok != "t" {
		t.Fatal("a live entry is not served")
	}
	if _, ok := c.get("new-1", "another subject token", later); ok {
		t.Fatal("an entry was served for another subject token (the session refreshed)")
	}
	if _, ok := c.get("new-1", "s", later.Add(time.Hour)); ok {
		t.Fatal("an expired entry was served")
	}
	c.forgetPrefix("new-")
	if _, ok := c.get("new-2", "s", later); ok {
		t.Fatal("forgetPrefix left an entry of the session")
	}
}
