package tokens

import (
	"context"
	"testing"
	"time"
)

// MemoryGrace keeps the first record for a key while it lives, and takes
// a new one once it has expired.
func TestMemoryGraceFirstWins(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	g := &MemoryGrace{Now: func() time.Time { return now }}
	ctx := context.Background()
	if stored, err := g.Put(ctx, "k", []byte("first"), time.Minute); err != nil || !stored {
		t.Fatalf("first Put: %v, %v", stored, err)
	}
	if stored, err := g.Put(ctx, "k", []byte("second"), time.Minute); err != nil || stored {
		t.Fatalf("second Put on a live key: stored %v, %v; want false", stored, err)
	}
	if v, ok, _ := g.Get(ctx, "k"); !ok || string(v) != "first" {
		t.Fatalf("Get = %q, %v; want the first record", v, ok)
	}
	now = now.Add(2 * time.Minute)
	if stored, err := g.Put(ctx, "k", []byte("third"), time.Minute); err != nil || !stored {
		t.Fatalf("Put after expiry: %v, %v; want stored", stored, err)
	}
	if v, ok, _ := g.Get(ctx, "k"); !ok || string(v) != "third" {
		t.Fatalf("Get = %q, %v; want the new record", v, ok)
	}
}
