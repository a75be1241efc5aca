package storage

import (
	"context"
	"crypto/subtle"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
)

// Keeper is a Store that remembers every secret it hands out (the form
// sealing keys, the generated cookie keys, the gateway client's secret)
// and puts them back when the store loses them.
//
// Generated secrets are made once, by the first instance that asks
// (Secret's gen), and read by every other instance at its start: they are
// what lets every instance sharing a Redis accept the others' cookies,
// forms and client authentication. A Redis restarted empty loses them, and
// an instance starting afterwards would generate new ones and disagree
// with the running instances until they restart. So Restore, run every
// RestoreInterval by Run, writes back each remembered secret the store
// lacks (Secret with the remembered value as gen, which creates only where
// none is): a running instance restores the shared values within a second
// of the loss, before another instance can usually restart.
//
// An instance that restarts at once after the loss could still read the
// store before a running one has put the secrets back, and generate its
// own. So a Keeper made with a settle time waits that long, once, before
// it lets the store generate a secret it lacks: long enough for the
// running instances' next Restore (the store's create-if-absent then
// returns their value instead). A first start on an empty store pays that
// wait once.
//
// A stored value that differs from the remembered one means another
// instance generated its own anyway (it started while no instance ran that
// held the secret, or the wait was too short): the instances disagree
// until this one restarts (and reads the stored value). Restore logs that
// at error level, once per secret, naming the secret, never its value.
type Keeper struct {
	Store
	log    *slog.Logger
	settle time.Duration

	mu       sync.Mutex
	held     map[string][]byte
	conflict map[string]bool

	settleMu sync.Mutex
	settled  bool
}

// RestoreInterval is how often Run checks the store for the secrets it
// remembers: one read per secret (a Redis GET, a bbolt View).
const RestoreInterval = time.Second

// SettleTime is the settle time for a store shared by several instances:
// two rounds of Restore.
const SettleTime = 2 * RestoreInterval

// NewKeeper wraps st. settle is how long the Keeper waits, once, before
// the first secret is generated (SettleTime for a store several instances
// share, zero for one only this process opens). log receives the put-back
// and conflict lines; nil means slog.Default().
func NewKeeper(st Store, log *slog.Logger, settle time.Duration) *Keeper {
	if log == nil {
		log = slog.Default()
	}
	return &Keeper{Store: st, log: log, settle: settle, held: map[string][]byte{}, conflict: map[string]bool{}}
}

// Secret is Store.Secret; the value returned is remembered. The first
// generation waits the settle time (see Keeper).
func (k *Keeper) Secret(ctx context.Context, name string, gen func() ([]byte, error)) ([]byte, error) {
	g := gen
	if k.settle > 0 {
		g = func() ([]byte, error) {
			if err := k.settleOnce(ctx, name); err != nil {
				return nil, err
			}
			return gen()
		}
	}
	v, err := k.Store.Secret(ctx, name, g)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.held[name] = slices.Clone(v)
	k.mu.Unlock()
	return v, nil
}

// settleOnce waits the settle time the first time a secret is about to be
// generated, so that a running instance can put back a lost one first.
func (k *Keeper) settleOnce(ctx context.Context, name string) error {
	k.settleMu.Lock()
	defer k.settleMu.Unlock()
	if k.settled {
		return nil
	}
	k.settled = true
	k.log.Info("the store holds no generated secret yet: waiting for running instances to put back what a store that lost its data had, before generating",
		"secret", name, "wait", k.settle.String())
	t := time.NewTimer(k.settle)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Restore puts back every remembered secret the store lacks, and reports
// how many it put back. It stops at the first store error.
func (k *Keeper) Restore(ctx context.Context) (int, error) {
	k.mu.Lock()
	held := maps.Clone(k.held)
	k.mu.Unlock()
	n := 0
	for _, name := range slices.Sorted(maps.Keys(held)) {
		want := held[name]
		put := false
		got, err := k.Store.Secret(ctx, name, func() ([]byte, error) {
			put = true
			return slices.Clone(want), nil
		})
		if err != nil {
			return n, err
		}
		switch {
		case put:
			n++
			k.log.Warn("generated secret put back into the store, which had lost it (was Redis restarted empty?)", "secret", name)
		case subtle.ConstantTimeCompare(got, want) != 1:
			k.mu.Lock()
			first := !k.conflict[name]
			k.conflict[name] = true
			k.mu.Unlock()
			if first {
				k.log.Error("the store holds another value of a generated secret than this instance uses: another instance generated it after the store lost it; restart this instance to use the stored value",
					"secret", name)
			}
		}
	}
	return n, nil
}

// Run calls Restore every RestoreInterval until ctx ends. Store errors
// (an outage) are left to the next round: the requests that need the
// store report them.
func (k *Keeper) Run(ctx context.Context) {
	t := time.NewTicker(RestoreInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_, _ = k.Restore(ctx)
		}
	}
}
