package tickets_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bffgate/bffgate/session"
	"github.com/bffgate/bffgate/session/codec"
	"github.com/bffgate/bffgate/session/sessiontest"
	"github.com/bffgate/bffgate/session/tickets"
)

// memory is an Engine in a map: the rules run on it in every plain go
// test, apart from bbolt's and Redis's own behaviour. A failing Update
// changes nothing.
type memory struct {
	mu    sync.Mutex
	recs  map[string][]byte
	index map[tickets.Index]map[string]map[string]bool // value -> ids
	down  error                                        // every call fails with it when set
}

func newMemory() *memory {
	return &memory{recs: map[string][]byte{}, index: map[tickets.Index]map[string]map[string]bool{
		tickets.BySID: {}, tickets.BySubject: {},
	}}
}

var _ tickets.Engine = (*memory)(nil)

func (m *memory) link(id string, meta codec.Meta, add bool) {
	for ix, v := range map[tickets.Index]string{tickets.BySID: meta.SID, tickets.BySubject: meta.Subject} {
		if v == "" {
			continue
		}
		if add {
			if m.index[ix][v] == nil {
				m.index[ix][v] = map[string]bool{}
			}
			m.index[ix][v][id] = true
		} else {
			delete(m.index[ix][v], id)
		}
	}
}

func (m *memory) Get(_ context.Context, id []byte) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down != nil {
		return nil, m.down
	}
	return bytes.Clone(m.recs[string(id)]), nil
}

func (m *memory) Create(_ context.Context, id, rec []byte, meta codec.Meta) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down != nil {
		return m.down
	}
	if m.recs[string(id)] != nil {
		return tickets.ErrExists
	}
	m.recs[string(id)] = bytes.Clone(rec)
	m.link(string(id), meta, true)
	return nil
}

func (m *memory) Update(_ context.Context, id []byte, fn func([]byte) (tickets.Change, error)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down != nil {
		return m.down
	}
	c, err := fn(bytes.Clone(m.recs[string(id)]))
	if err != nil {
		return err
	}
	switch c.Op {
	case tickets.Remove:
		delete(m.recs, string(id))
		m.link(string(id), c.Old, false)
	case tickets.Put:
		m.link(string(id), c.Old, false)
		m.recs[string(id)] = bytes.Clone(c.Record)
		m.link(string(id), c.Meta, true)
	}
	return nil
}

func (m *memory) End(_ context.Context, ix tickets.Index, v string, match func(codec.Meta) bool) ([]codec.Meta, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down != nil {
		return nil, m.down
	}
	var out []codec.Meta
	for id := range m.index[ix][v] {
		rec := m.recs[id]
		meta, err := codec.ParseMeta(rec)
		if rec == nil || err != nil || !match(meta) {
			delete(m.index[ix][v], id)
			continue
		}
		delete(m.recs, id)
		m.link(id, meta, false)
		out = append(out, meta)
	}
	return out, nil
}

func (m *memory) Ping(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.down
}

func TestStoreContract(t *testing.T) {
	sessiontest.RunStoreTests(t, func(t *testing.T, now func() time.Time) session.Store {
		s, err := tickets.New(newMemory(), tickets.Config{Name: "memory", Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestNew(t *testing.T) {
	t.Parallel()
	if _, err := tickets.New(nil, tickets.Config{Name: "x"}); err == nil {
		t.Error("New(nil engine) succeeded")
	}
	if _, err := tickets.New(newMemory(), tickets.Config{}); err == nil {
		t.Error("New without a name succeeded")
	}
	reg := prometheus.NewRegistry()
	if _, err := tickets.New(newMemory(), tickets.Config{Name: "x", Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tickets.New(newMemory(), tickets.Config{Name: "x", Registerer: reg}); err == nil {
		t.Error("a second store of one name on one registry succeeded; its metrics would clash")
	}
}

// Every operation is counted under its result; an engine fault is
// "unavailable", reported with the store's name and the operation.
func TestMetricsAndFaults(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := newMemory()
	clock := sessiontest.NewClock(sessiontest.Start())
	s, err := tickets.New(m, tickets.Config{Name: "memory", Now: clock.Now, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	h, err := s.Create(ctx, sessiontest.Sample(clock.Now(), 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "not-a-ticket"); !errors.Is(err, session.ErrNotFound) {
		t.Fatal(err)
	}
	mine := errors.New("the caller's")
	if _, err := s.Update(ctx, h, func(*session.Session) error { return mine }); err != mine {
		t.Errorf("Update with a failing fn = %v; want fn's error itself", err)
	}
	m.down = errors.Join(session.ErrUnavailable, errors.New("disk on fire"))
	_, err = s.Get(ctx, h)
	if !errors.Is(err, session.ErrUnavailable) || !strings.HasPrefix(err.Error(), "session/memory: get: ") {
		t.Errorf("Get on a failing engine = %v; want ErrUnavailable, prefixed with the store and operation", err)
	}
	for _, c := range []struct {
		op, result string
		want       float64
	}{
		{"create", "ok", 1}, {"get", "not_found", 1}, {"update", "error", 1}, {"get", "unavailable", 1},
	} {
		got := counter(t, reg, c.op, c.result)
		if got != c.want {
			t.Errorf("bffgate_session_memory_operations_total{op=%q,result=%q} = %v, want %v", c.op, c.result, got, c.want)
		}
	}
}

func counter(t *testing.T, reg *prometheus.Registry, op, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "bffgate_session_memory_operations_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["op"] == op && labels["result"] == result {
				return mt.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// Update's function may run more than once (an optimistic engine reran
// it): the outcome is the last run's.
func TestUpdateRerun(t *testing.T) {
	t.Parallel()
	clock := sessiontest.NewClock(sessiontest.Start())
	m := newMemory()
	s, err := tickets.New(rerun{m}, tickets.Config{Name: "rerun", Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	h, err := s.Create(ctx, sessiontest.Sample(clock.Now(), 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, h, func(x *session.Session) error { x.AccessToken = "new"; return nil }); err != nil {
		t.Fatalf("Update = %v", err)
	}
	got, err := s.Get(ctx, h)
	if err != nil || got.AccessToken != "new" || got.Version != 8 {
		t.Errorf("after a rerun Update: %+v, %v; want the token changed once, version 8", got, err)
	}
}

// rerun runs every Update's function twice on the same record, keeping
// the second outcome, as a Redis engine does after a lost WATCH.
type rerun struct{ *memory }

func (r rerun) Update(ctx context.Context, id []byte, fn func([]byte) (tickets.Change, error)) error {
	rec, _ := r.memory.Get(ctx, id)
	if _, err := fn(rec); err != nil {
		return err
	}
	return r.memory.Update(ctx, id, fn)
}
