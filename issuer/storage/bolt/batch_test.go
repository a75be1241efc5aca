package bolt

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bffgate/bffgate/issuer/storage"
)

// TestGroupCommit queues functions behind a commit held open, so that they
// run in one batch, one of them failing and one panicking: the others
// commit, the failing one leaves nothing and gets its own error, the
// panicking one panics in its own caller's goroutine, and what commits is
// visible after Update returns.
func TestGroupCommit(t *testing.T) {
	t.Parallel()
	s, _, _ := newTestStore(t)
	e := s.engine
	ctx := context.Background()
	hold, held := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- e.Update(ctx, func(tx storage.Tx) error {
			close(held)
			<-hold
			return tx.Put(storage.BucketSecrets, "first", []byte("1"))
		})
	}()
	<-held
	const n = 20
	boom := errors.New("boom")
	errs := make([]error, n)
	panics := make([]any, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { panics[i] = recover() }()
			errs[i] = e.Update(ctx, func(tx storage.Tx) error {
				if err := tx.Put(storage.BucketSecrets, fmt.Sprint("k", i), []byte("v")); err != nil {
					return err
				}
				switch i {
				case 3:
					return boom
				case 7:
					panic("seven")
				}
				return nil
			})
		}()
	}
	// Every function queued behind the held commit: they share the next.
	for deadline := time.Now().Add(10 * time.Second); ; {
		e.batch.mu.Lock()
		q := len(e.batch.queue)
		e.batch.mu.Unlock()
		if q == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d functions queued", q, n)
		}
		time.Sleep(time.Millisecond)
	}
	close(hold)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i := range n {
		v, err := getSecret(e, fmt.Sprint("k", i))
		if err != nil {
			t.Fatal(err)
		}
		switch i {
		case 3:
			if !errors.Is(errs[i], boom) || v != nil {
				t.Errorf("failing function: %v, value %q; want boom and nothing stored", errs[i], v)
			}
		case 7:
			if panics[i] != "seven" || v != nil {
				t.Errorf("panicking function: panic %v, value %q; want its panic in its caller and nothing stored", panics[i], v)
			}
		default:
			if errs[i] != nil || panics[i] != nil || string(v) != "v" {
				t.Errorf("function %d: %v, %v, value %q; want it committed", i, errs[i], panics[i], v)
			}
		}
	}
}

func getSecret(e *Engine, key string) ([]byte, error) {
	var v []byte
	err := e.View(context.Background(), func(tx storage.Tx) error {
		var err error
		v, err = tx.Get(storage.BucketSecrets, key)
		return err
	})
	return v, err
}
