package issuer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/bffgate/bffgate/issuer/storage"
)

// ErrUnknownClient is returned by SetClientState for an id that is no
// client of this issuer.
var ErrUnknownClient = errors.New("issuer: no such client")

// SetClientState disables or enables the client id, as `bffgate agents
// disable|enable` does with the store alone, from within the running
// issuer (the local admin socket of `bffgate serve`): the state is written
// to the store, which announces it on the denylist's change log to the
// other instances; this instance applies it at once, and records the
// operator's action (via names it) in its audit trail.
func (s *Server) SetClientState(ctx context.Context, id string, disabled bool, via string) (storage.ClientState, error) {
	if s.client(id) == nil {
		return storage.ClientState{}, fmt.Errorf("%w %q in issuer.clients of the running configuration", ErrUnknownClient, id)
	}
	st, err := s.ag.store.SetClientDisabled(ctx, id, disabled, s.now())
	if err != nil {
		return storage.ClientState{}, err
	}
	// Applied here before the change log comes back: the reload that it
	// triggers finds the state known and records nothing more. (A reload
	// that read the store between the write and this line records the
	// change too, with the generic reason.)
	s.ag.mu.Lock()
	next := maps.Clone(s.ag.states)
	next[id] = st
	s.ag.states = next
	s.ag.mu.Unlock()
	action, verb := "agent_enable", "enabled"
	if disabled {
		action, verb = "agent_disable", "disabled"
	}
	s.log.Info("client "+verb+" by an operator", "client_id", id, "via", via, "changed", st.Changed, "not_before", st.NotBefore)
	reason := "client " + verb + " with " + via
	if !st.NotBefore.IsZero() {
		reason += "; tokens issued before " + st.NotBefore.Format(time.RFC3339) + " are refused"
	}
	s.ag.audit.Log(ctx, AuditRecord{Time: st.Changed, Action: action, ClientID: id, Decision: DecisionAllow, Reason: reason})
	return st, nil
}
