// Package memory is a storage.Engine in the process's memory: the issuer's
// rules (storage.Rules) run on it in every plain `go test`, without a data
// file or a Redis, and it serves a single-instance issuer that may forget
// its state on restart.
//
// Transactions are serialised by one lock (readers share it). A write
// transaction applies its changes as it goes and keeps an undo record of
// each; when the transaction's function fails, the undo records are played
// back in reverse, so a failed Update leaves nothing behind, as a bbolt
// rollback or a discarded Redis MULTI does.
package memory

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/bffgate/bffgate/issuer/storage"
)

// ErrReadOnly is returned by a write through the Tx of View.
var ErrReadOnly = errors.New("memory: write in a read-only transaction")

// Engine is the in-memory storage.Engine. The zero value is not usable;
// call New.
type Engine struct {
	mu     sync.RWMutex
	closed bool
	bucket map[storage.Bucket]map[string][]byte
	index  map[storage.Index]map[string]map[string]struct{}
	expiry map[expiryEntry]struct{}
	log    []storage.LogEntry // in cursor order
	seq    uint64
}

type expiryEntry struct {
	at   uint64 // storage.Nanos
	kind storage.ExpiryKind
	id   string
}

var _ storage.Engine = (*Engine)(nil)

// New returns an empty Engine.
func New() *Engine {
	e := &Engine{
		bucket: make(map[storage.Bucket]map[string][]byte),
		index:  make(map[storage.Index]map[string]map[string]struct{}),
		expiry: make(map[expiryEntry]struct{}),
	}
	for _, b := range storage.AllBuckets() {
		e.bucket[b] = make(map[string][]byte)
	}
	e.index[storage.IndexGrantRefresh] = make(map[string]map[string]struct{})
	e.index[storage.IndexSIDGrants] = make(map[string]map[string]struct{})
	return e
}

// Close makes every later transaction fail with storage.ErrUnavailable
// (what a closed data file or a lost Redis does).
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	return nil
}

func (e *Engine) errClosed() error {
	if e.closed {
		return fmt.Errorf("memory: engine is closed: %w", storage.ErrUnavailable)
	}
	return nil
}

// View runs fn under the read lock.
func (e *Engine) View(ctx context.Context, fn func(storage.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if err := e.errClosed(); err != nil {
		return err
	}
	return fn(&tx{e: e})
}

// Update runs fn under the write lock and undoes its changes when it fails.
func (e *Engine) Update(ctx context.Context, fn func(storage.Tx) error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.errClosed(); err != nil {
		return err
	}
	t := &tx{e: e, writable: true}
	defer func() {
		if p := recover(); p != nil {
			t.rollback()
			panic(p)
		}
		if err != nil {
			t.rollback()
		}
	}()
	return fn(t)
}

// Ping reports whether the engine is open.
func (e *Engine) Ping(ctx context.Context) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.errClosed()
}

type tx struct {
	e        *Engine
	writable bool
	undo     []func()
}

func (t *tx) rollback() {
	for i := len(t.undo) - 1; i >= 0; i-- {
		t.undo[i]()
	}
	t.undo = nil
}

func (t *tx) check() error {
	if !t.writable {
		return ErrReadOnly
	}
	return nil
}

func (t *tx) bucket(b storage.Bucket) (map[string][]byte, error) {
	m, ok := t.e.bucket[b]
	if !ok {
		return nil, fmt.Errorf("memory: unknown bucket %d", b)
	}
	return m, nil
}

func (t *tx) Get(b storage.Bucket, key string) ([]byte, error) {
	m, err := t.bucket(b)
	if err != nil {
		return nil, err
	}
	if v, ok := m[key]; ok {
		return slices.Clone(v), nil
	}
	return nil, nil
}

func (t *tx) Put(b storage.Bucket, key string, value []byte) error {
	if err := t.check(); err != nil {
		return err
	}
	if len(value) == 0 {
		return fmt.Errorf("memory: put %q: empty value", key)
	}
	m, err := t.bucket(b)
	if err != nil {
		return err
	}
	t.saveKey(m, key)
	m[key] = slices.Clone(value)
	return nil
}

func (t *tx) Delete(b storage.Bucket, key string) error {
	if err := t.check(); err != nil {
		return err
	}
	m, err := t.bucket(b)
	if err != nil {
		return err
	}
	if _, ok := m[key]; ok {
		t.saveKey(m, key)
		delete(m, key)
	}
	return nil
}

// saveKey records how to put key of m back as it is now.
func (t *tx) saveKey(m map[string][]byte, key string) {
	old, had := m[key]
	t.undo = append(t.undo, func() {
		if had {
			m[key] = old
		} else {
			delete(m, key)
		}
	})
}

func (t *tx) set(ix storage.Index) (map[string]map[string]struct{}, error) {
	m, ok := t.e.index[ix]
	if !ok {
		return nil, fmt.Errorf("memory: unknown index %d", ix)
	}
	return m, nil
}

func (t *tx) AddMember(ix storage.Index, owner, member string) error {
	if err := t.check(); err != nil {
		return err
	}
	m, err := t.set(ix)
	if err != nil {
		return err
	}
	s := m[owner]
	if s == nil {
		s = make(map[string]struct{})
		m[owner] = s
	}
	if _, ok := s[member]; ok {
		return nil
	}
	s[member] = struct{}{}
	t.undo = append(t.undo, func() { removeMember(m, owner, member) })
	return nil
}

func (t *tx) RemoveMember(ix storage.Index, owner, member string) error {
	if err := t.check(); err != nil {
		return err
	}
	m, err := t.set(ix)
	if err != nil {
		return err
	}
	if _, ok := m[owner][member]; !ok {
		return nil
	}
	removeMember(m, owner, member)
	t.undo = append(t.undo, func() {
		if m[owner] == nil {
			m[owner] = make(map[string]struct{})
		}
		m[owner][member] = struct{}{}
	})
	return nil
}

func removeMember(m map[string]map[string]struct{}, owner, member string) {
	delete(m[owner], member)
	if len(m[owner]) == 0 {
		delete(m, owner)
	}
}

func (t *tx) Members(ix storage.Index, owner string) ([]string, error) {
	m, err := t.set(ix)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(m[owner]))
	for k := range m[owner] {
		out = append(out, k)
	}
	slices.Sort(out)
	return out, nil
}

func (t *tx) Expire(kind storage.ExpiryKind, id string, at time.Time) error {
	if err := t.check(); err != nil {
		return err
	}
	k := expiryEntry{storage.Nanos(at), kind, id}
	if _, ok := t.e.expiry[k]; ok {
		return nil
	}
	t.e.expiry[k] = struct{}{}
	t.undo = append(t.undo, func() { delete(t.e.expiry, k) })
	return nil
}

func (t *tx) Unexpire(kind storage.ExpiryKind, id string, at time.Time) error {
	if err := t.check(); err != nil {
		return err
	}
	k := expiryEntry{storage.Nanos(at), kind, id}
	if _, ok := t.e.expiry[k]; !ok {
		return nil
	}
	delete(t.e.expiry, k)
	t.undo = append(t.undo, func() { t.e.expiry[k] = struct{}{} })
	return nil
}

// Due scans the whole index: fine for the sizes a test or a small
// single-instance issuer holds.
func (t *tx) Due(now time.Time, limit int) ([]storage.Due, error) {
	max := storage.Nanos(now)
	var due []expiryEntry
	for k := range t.e.expiry {
		if k.at <= max {
			due = append(due, k)
		}
	}
	slices.SortFunc(due, func(a, b expiryEntry) int {
		return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.kind, b.kind), cmp.Compare(a.id, b.id))
	})
	if limit > 0 && len(due) > limit {
		due = due[:limit]
	}
	out := make([]storage.Due, len(due))
	for i, k := range due {
		out[i] = storage.Due{At: storage.FromNanos(k.at), Kind: k.kind, ID: k.id}
	}
	return out, nil
}

func (t *tx) AppendLog(e storage.DenyEntry) error {
	if err := t.check(); err != nil {
		return err
	}
	t.e.seq++
	c := storage.Cursor(t.e.seq)
	t.e.log = append(t.e.log, storage.LogEntry{Cursor: c, Entry: e})
	t.undo = append(t.undo, func() {
		t.e.seq--
		t.e.log = t.e.log[:len(t.e.log)-1]
	})
	return t.Expire(storage.ExpireLog, storage.LogExpiryID(c), e.Until)
}

func (t *tx) find(c storage.Cursor) (int, bool) {
	return slices.BinarySearchFunc(t.e.log, c, func(e storage.LogEntry, c storage.Cursor) int { return cmp.Compare(e.Cursor, c) })
}

func (t *tx) Log(after storage.Cursor, limit int) ([]storage.LogEntry, error) {
	i, found := t.find(after)
	if found {
		i++
	}
	rest := t.e.log[i:]
	if limit > 0 && len(rest) > limit {
		rest = rest[:limit]
	}
	return slices.Clone(rest), nil
}

func (t *tx) DeleteLog(c storage.Cursor) error {
	if err := t.check(); err != nil {
		return err
	}
	i, found := t.find(c)
	if !found {
		return nil
	}
	old := t.e.log[i]
	t.e.log = slices.Delete(t.e.log, i, i+1)
	t.undo = append(t.undo, func() { t.e.log = slices.Insert(t.e.log, i, old) })
	return nil
}
