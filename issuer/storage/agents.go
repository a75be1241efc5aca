package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"time"
)

// The state of agent and workload clients (issue 17): the replay record of
// client assertions (RFC 7523 §3 item 7: "The authorization server MAY
// ensure that JWTs are not replayed by maintaining the set of used jti
// values for the length of time for which the JWT would be considered
// valid") and the disabled flag an operator sets with `bffgate agents
// disable`. Both live in the store so that every instance sharing it sees
// them.

// ErrReplayed means a client assertion was presented a second time within
// its lifetime.
var ErrReplayed = errors.New("storage: assertion already used")

// DenyClient is the kind of the change-log entry that announces a change
// of a client's state (disabled or enabled). Its ID is the client id; it
// names no denylist record, only tells the instances polling the log (and
// subscribed to its pub/sub) to read the client's state again.
const DenyClient DenyKind = "client"

// AgentStore is the state agent features need of the store; Store
// includes it, and Rules implements it on every engine.
type AgentStore interface {
	// UseAssertion records the assertion named key (a digest of the
	// client id and the assertion's jti) as used until exp. A key already
	// recorded with an expiry after now is ErrReplayed, and the record is
	// left alone. exp must be after now.
	UseAssertion(ctx context.Context, key string, exp, now time.Time) error
	// ClientStates returns the stored state of every client that has one.
	ClientStates(ctx context.Context) (map[string]ClientState, error)
	// SetClientDisabled disables (or enables) the client id as of now and
	// announces the change on the denylist change log (kind DenyClient).
	// Disabling sets NotBefore to now; enabling keeps it, so that the
	// tokens of before the disable stay refused. It returns the new state.
	SetClientDisabled(ctx context.Context, id string, disabled bool, now time.Time) (ClientState, error)
}

// ClientState is the operator-set state of one client.
type ClientState struct {
	// Disabled refuses the client's grants and every token it holds.
	Disabled bool `json:"disabled"`
	// NotBefore refuses every token of the client issued before it (the
	// time of its last disable), even once enabled again: a disable
	// revokes what the client held.
	NotBefore time.Time `json:"not_before"`
	// Changed is when the state was last set.
	Changed time.Time `json:"changed"`
}

var _ AgentStore = (*Rules)(nil)

// clientStatesKey is the one record of BucketClients: the states of all
// clients, JSON map[client id]ClientState. Disabled clients are few; one
// record makes ClientStates one read, which every instance does each
// second.
const clientStatesKey = "states"

// changeAnnounce is how long a DenyClient change-log entry stays: long
// enough for every instance's poll to read it (the poll interval is at
// most a minute by default); each instance also reads every state each
// second, so a missed entry costs at most that second.
const changeAnnounce = time.Hour

// MaxAssertionKeyLen bounds a replay record's key.
const MaxAssertionKeyLen = 256

// UseAssertion implements AgentStore.
func (r *Rules) UseAssertion(ctx context.Context, key string, exp, now time.Time) error {
	switch {
	case key == "" || len(key) > MaxAssertionKeyLen:
		return fmt.Errorf("storage: use assertion: key is %d bytes; it must be 1 to %d (pass a digest)", len(key), MaxAssertionKeyLen)
	case !exp.After(now):
		return errors.New("storage: use assertion: exp is not after now; an expired assertion needs no replay record")
	}
	return r.update(ctx, "use assertion", func(t *rtx) error {
		v, err := t.Get(BucketAssertions, key)
		if err != nil {
			return err
		}
		if len(v) == 8 {
			old := FromNanos(binary.BigEndian.Uint64(v))
			if !expired(old, now) {
				return ErrReplayed
			}
			// Expired and not purged yet: the key is free again.
			if err := t.Unexpire(ExpireAssertion, key, old); err != nil {
				return err
			}
		}
		if err := t.Put(BucketAssertions, key, binary.BigEndian.AppendUint64(nil, Nanos(exp))); err != nil {
			return err
		}
		return t.Expire(ExpireAssertion, key, exp)
	})
}

// ClientStates implements AgentStore.
func (r *Rules) ClientStates(ctx context.Context) (map[string]ClientState, error) {
	out := map[string]ClientState{}
	err := r.view(ctx, "client states", func(t *rtx) error {
		clear(out)
		_, err := t.getJSON(BucketClients, clientStatesKey, &out)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SetClientDisabled implements AgentStore.
func (r *Rules) SetClientDisabled(ctx context.Context, id string, disabled bool, now time.Time) (ClientState, error) {
	if id == "" {
		return ClientState{}, errors.New("storage: set client state: client id is empty")
	}
	var out ClientState
	err := r.update(ctx, "set client state", func(t *rtx) error {
		states := map[string]ClientState{}
		if _, err := t.getJSON(BucketClients, clientStatesKey, &states); err != nil {
			return err
		}
		st := states[id]
		st.Disabled, st.Changed = disabled, now.UTC()
		if disabled {
			st.NotBefore = now.UTC()
		}
		next := maps.Clone(states)
		next[id] = st
		if err := t.putJSON(BucketClients, clientStatesKey, next); err != nil {
			return err
		}
		if err := t.AppendLog(DenyEntry{Kind: DenyClient, ID: id, Until: now.Add(changeAnnounce)}); err != nil {
			return err
		}
		out = st
		return nil
	})
	return out, err
}
