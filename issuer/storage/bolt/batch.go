package bolt

import (
	"errors"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/bffgate/bffgate/issuer/storage"
)

// Group commit. bbolt commits one write transaction at a time and fsyncs
// each: one grant per commit makes the disk's fsync rate the issuer's
// grant rate. So Update queues its function, and whichever caller finds no
// commit running becomes the committer: it runs every queued function, in
// queue order, in one bbolt transaction and commits them with one fsync,
// then hands on to a new committer goroutine if more arrived meanwhile.
// Functions that arrive while a commit is on its way to the disk wait for
// the next one, so under load each fsync carries as many grants as came in
// during the previous one, and a lone request waits for no timer (unlike
// bbolt's DB.Batch, whose MaxBatchDelay every single caller would pay).
//
// Durability: a caller's Update returns only after the commit holding its
// function has returned from bbolt, fsync included, and the token endpoint
// answers only after Update returns. A crash (kill -9, power loss) before
// or during the commit leaves the previous state on disk (bbolt's
// meta-page switch is atomic) and none of that batch's callers has been
// answered; a crash after it leaves the whole batch on disk, whether or not
// its callers were answered yet. So no acknowledged rotation, redemption or
// revocation is lost: at worst an unacknowledged one survives, which the
// client sees as a refresh token that was rotated (the next use is refused
// as a reuse, as for a lost response today).
//
// Isolation: a function that fails (its rule refuses: not found, expired,
// reused; or a callback's error) must leave nothing behind, and the
// functions before it in the batch saw nothing it wrote. bbolt has no
// savepoints, so the committer rolls the whole transaction back, runs the
// failed function alone in its own transaction (its answer, against the
// committed state, is final) and then the rest of the batch again. A
// function may therefore run more than once, which the storage.Engine
// contract allows (the rules and their callbacks have no effect outside
// the transaction and their results, which each run overwrites).
type batcher struct {
	mu      sync.Mutex
	queue   []*call
	running bool
}

// maxBatch bounds the functions of one transaction, so that one commit
// stays small (a few hundred grants write a few hundred kilobytes).
const maxBatch = 256

type call struct {
	fn    func(storage.Tx) error
	err   error
	panic any // a panic of fn, raised again in the caller's goroutine
	done  chan struct{}
}

// errAbort rolls a batch back after one of its functions failed.
var errAbort = errors.New("bolt: batch aborted")

// update queues fn for the next group commit and waits for its result.
func (e *Engine) update(fn func(storage.Tx) error) error {
	c := &call{fn: fn, done: make(chan struct{})}
	b := &e.batch
	b.mu.Lock()
	b.queue = append(b.queue, c)
	lead := !b.running
	if lead {
		b.running = true
	}
	b.mu.Unlock()
	if lead {
		e.commitLoop(c)
	}
	<-c.done
	if c.panic != nil {
		panic(c.panic)
	}
	return c.err
}

// commitLoop commits queued batches until own is done, then hands the rest
// of the queue to a new goroutine (or stops when it is empty).
func (e *Engine) commitLoop(own *call) {
	b := &e.batch
	for {
		b.mu.Lock()
		if len(b.queue) == 0 {
			b.running = false
			b.mu.Unlock()
			return
		}
		n := min(len(b.queue), maxBatch)
		batch := b.queue[:n:n]
		b.queue = b.queue[n:]
		b.mu.Unlock()
		e.commit(batch)
		if own != nil && isDone(own) {
			go e.commitLoop(nil)
			return
		}
	}
}

func isDone(c *call) bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// commit runs batch in as few transactions as its failures allow and
// completes every call of it.
func (e *Engine) commit(batch []*call) {
	for len(batch) > 0 {
		failed := -1
		err := e.db.Update(func(tx *bolt.Tx) error {
			t := e.wrap(tx)
			for i, c := range batch {
				if runCall(c, t) {
					failed = i
					return errAbort
				}
			}
			return nil
		})
		if failed < 0 {
			// Committed (err nil) or the commit failed: every call of
			// the batch gets the commit's answer.
			for _, c := range batch {
				c.err = e.fault("commit", err)
				close(c.done)
			}
			return
		}
		// Rolled back: run the failed call alone, then the rest again.
		c := batch[failed]
		e.solo(c)
		batch = append(batch[:failed:failed], batch[failed+1:]...)
	}
}

// runCall runs c's function in t and reports whether it failed (an error
// or a panic, kept in c).
func runCall(c *call, t *txn) (failed bool) {
	defer func() {
		if p := recover(); p != nil {
			c.panic, failed = p, true
		}
	}()
	c.err, c.panic = nil, nil
	c.err = c.fn(t)
	return c.err != nil
}

// solo runs c in a transaction of its own and completes it.
func (e *Engine) solo(c *call) {
	var fnFailed bool
	err := e.db.Update(func(tx *bolt.Tx) error {
		if fnFailed = runCall(c, e.wrap(tx)); fnFailed {
			if c.err == nil {
				return errAbort // a panic: roll back
			}
			return c.err
		}
		return nil
	})
	if !fnFailed {
		c.err = e.fault("commit", err)
	} else if c.panic == nil && !errors.Is(err, c.err) {
		c.err = fmt.Errorf("bolt: %w (rolling back: %w)", c.err, err)
	}
	close(c.done)
}
