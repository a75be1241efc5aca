package bolt

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Ended remembers "not ended" answers, and a write ends that at once: the
// first check after EndSID or EndSubject returns sees it.
func TestEndedRemembersUntilAWrite(t *testing.T) {
	ctx := context.Background()
	e := NewEnded(openDB(t, filepath.Join(t.TempDir(), "ended.db")))
	created := time.Unix(1_800_000_000, 0)
	check := func(sid, sub string, want bool) {
		t.Helper()
		for range 3 { // the first read, then remembered answers
			got, err := e.Ended(ctx, sid, sub, created)
			if err != nil || got != want {
				t.Fatalf("Ended(%q, %q) = %v, %v; want %v", sid, sub, got, err, want)
			}
		}
	}
	check("sid-1", "sub-1", false)
	check("sid-2", "sub-2", false)
	if err := e.EndSID(ctx, "sid-1", created.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	check("sid-1", "sub-1", true)
	check("sid-2", "sub-2", false)
	if err := e.EndSubject(ctx, "sub-2", created, created.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	check("sid-2", "sub-2", true)
	check("sid-3", "sub-2", true) // another session of that subject, as old
	if got, _ := e.Ended(ctx, "sid-4", "sub-2", created.Add(time.Second)); got {
		t.Errorf("a session created after the subject's end is ended")
	}
}

// Readers racing a writer: once EndSID has returned, no reader is told
// the session lives.
func TestEndedRaceWithWriter(t *testing.T) {
	ctx := context.Background()
	e := NewEnded(openDB(t, filepath.Join(t.TempDir(), "ended.db")))
	created := time.Unix(1_800_000_000, 0)
	var done atomic.Bool
	var wrong atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20000; i++ {
				after := done.Load() // read before the check: it must see the end
				got, err := e.Ended(ctx, "sid-r", "sub-r", created)
				if err != nil {
					t.Error(err)
					return
				}
				if after && !got {
					wrong.Add(1)
				}
				if after && i > 100 {
					return
				}
			}
		}()
	}
	time.Sleep(5 * time.Millisecond)
	if err := e.EndSID(ctx, "sid-r", created.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	done.Store(true)
	wg.Wait()
	if n := wrong.Load(); n != 0 {
		t.Fatalf("%d checks after EndSID returned said the session lives", n)
	}
}

func BenchmarkEndedLive(b *testing.B) {
	ctx := context.Background()
	e := NewEnded(openDB(b, filepath.Join(b.TempDir(), "ended.db")))
	created := time.Unix(1_800_000_000, 0)
	if err := e.EndSID(ctx, "other", created.Add(time.Hour)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if got, err := e.Ended(ctx, "sid-live", "sub-live", created); err != nil || got {
			b.Fatal(got, err)
		}
	}
}
