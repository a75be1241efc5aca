package obs

import (
	"sync"
	"testing"
)

// Request ids are 24 hex digits that the middleware itself would accept
// from a client, distinct within an Obs (concurrent callers included)
// and between two Obs.
func TestRequestIDsUnique(t *testing.T) {
	t.Parallel()
	a, err := New(Config{Component: "a"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{Component: "b"})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				id := a.newRequestID()
				mu.Lock()
				if seen[id] {
					t.Errorf("request id %s given twice", id)
				}
				seen[id] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for range 1000 {
		id := b.newRequestID()
		if seen[id] {
			t.Errorf("request id %s given by two Obs", id)
		}
		if len(id) != 24 || !validRequestID(id) {
			t.Errorf("request id %q: want 24 hex digits", id)
		}
		for _, c := range id {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				t.Errorf("request id %q: want hex digits", id)
				break
			}
		}
	}
}
