package issuer

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bffgate/bffgate/internal/obs"
	"github.com/bffgate/bffgate/issuer/audit"
	"github.com/bffgate/bffgate/issuer/protocol"
	"github.com/bffgate/bffgate/issuer/storage"
	"github.com/bffgate/bffgate/issuer/token"
)

// Audit configures the issuer's audit trail (package audit).
type Audit struct {
	// File is the append-only audit file; empty keeps no audit trail.
	File string `yaml:"file"`
	// MaxSize rotates the file at this many bytes (default 100 MiB).
	MaxSize int64 `yaml:"max_size"`
}

// auditKeySecret names the audit chain's HMAC key in the store.
const auditKeySecret = "issuer/audit-key"

// AuditKey returns the HMAC key of the audit chain from st, creating it on
// first use (`bffgate audit verify` reads it the same way).
func AuditKey(ctx context.Context, st storage.Store) ([]byte, error) {
	return st.Secret(ctx, auditKeySecret, func() ([]byte, error) {
		b := make([]byte, 32)
		_, err := rand.Read(b)
		return b, err
	})
}

// AuditRecord is one audit record; see package audit.
type AuditRecord = audit.Record

// Decisions of an audit record.
const (
	DecisionAllow = audit.Allow
	DecisionDeny  = audit.Deny
)

// agentState is the issuer's part for agents and workloads: their
// metrics, the operator-set client states, the SPIFFE bundles and the
// audit trail.
type agentState struct {
	metrics agentMetrics
	audit   audit.Logger
	file    *audit.File // nil without an audit file
	store   agentStore
	spiffe  *spiffeBundles

	mu     sync.RWMutex
	states map[string]storage.ClientState
}

type agentMetrics struct {
	// clientAuth counts client authentications by method and result.
	clientAuth  *prometheus.CounterVec
	keyFetches  *prometheus.CounterVec
	replays     prometheus.Counter
	refused     *prometheus.CounterVec
	auditErrors prometheus.Counter
}

func newAgentMetrics(reg prometheus.Registerer) (agentMetrics, error) {
	m := agentMetrics{
		clientAuth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_issuer_client_auth_total",
			Help: "Client authentications at the token, introspection and revocation endpoints, by method (client_secret_basic, client_secret_post, private_key_jwt, spiffe_jwt, none) and result (ok, refused).",
		}, []string{"method", "result"}),
		keyFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_issuer_key_set_fetches_total",
			Help: "Fetches of remote key sets (clients' jwks_uri, trusted issuers' jwks_url, SPIFFE bundle endpoints), by kind (client, trusted_issuer, spiffe_bundle) and result (ok, error).",
		}, []string{"kind", "result"}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bffgate_issuer_assertion_replays_total",
			Help: "Client assertions refused because their jti was used before (RFC 7523 §3).",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_issuer_disabled_client_refusals_total",
			Help: "Requests refused because their client is disabled (bffgate agents disable, or disabled: true), by endpoint.",
		}, []string{"endpoint"}),
		auditErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bffgate_issuer_audit_write_errors_total",
			Help: "Audit records that could not be written to the audit file.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.clientAuth, m.keyFetches, m.replays, m.refused, m.auditErrors} {
			if err := reg.Register(c); err != nil {
				return m, err
			}
		}
	}
	return m, nil
}

// newAgentState builds the agent part of s (after s.cfg and s.clients).
func (s *Server) newAgentState(ctx context.Context) (*agentState, error) {
	m, err := newAgentMetrics(s.cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("issuer: register metrics: %w", err)
	}
	a := &agentState{metrics: m, audit: audit.Discard{}, states: map[string]storage.ClientState{}}
	if s.cfg.Audit.File != "" {
		key, err := AuditKey(ctx, s.cfg.Store)
		if err != nil {
			return nil, fmt.Errorf("issuer: read the audit key from the store: %w", err)
		}
		f, err := audit.Open(audit.FileConfig{Path: s.cfg.Audit.File, Key: key, MaxSize: s.cfg.Audit.MaxSize, OnError: func(err error) {
			m.auditErrors.Inc()
			s.log.Error("audit record not written", "err", err)
		}})
		if err != nil {
			return nil, fmt.Errorf("issuer.audit.file: %w", err)
		}
		a.audit, a.file = f, f
	}
	a.store = s.stores.agents
	if a.states, err = a.store.ClientStates(ctx); err != nil {
		return nil, fmt.Errorf("issuer: read the client states from the store: %w", err)
	}
	if a.spiffe, err = newSPIFFEBundles(s.cfg.SPIFFE, s.cfg.HTTPClient, s.log); err != nil {
		return nil, err
	}
	observe := func(kind string, src keySource) {
		if r, ok := src.(*remoteKeySet); ok {
			r.observe = func(err error) {
				result := "ok"
				if err != nil {
					result = "error"
				}
				m.keyFetches.WithLabelValues(kind, result).Inc()
			}
		}
	}
	for _, cl := range s.configured {
		observe("client", cl.keys)
	}
	for _, src := range a.spiffe.domains {
		observe("spiffe_bundle", src)
	}
	return a, nil
}

// Auditor returns the issuer's audit logger, for other features (token
// exchange) to record their decisions in the same chain.
func (s *Server) Auditor() audit.Logger { return s.ag.audit }

// Close closes the audit file.
func (s *Server) Close() error {
	if s.ag.file != nil {
		return s.ag.file.Close()
	}
	return nil
}

// audit records one decision with the request's id.
func (s *Server) audit(c *fiber.Ctx, r AuditRecord) {
	r.RequestID = obs.RequestID(c)
	if r.Time.IsZero() {
		r.Time = s.now()
	}
	s.ag.audit.Log(c.UserContext(), r)
}

// reasonOf is the audit reason of a refusal: the error code and the
// description the client got (never a secret).
func reasonOf(err error) string {
	pe := toProtocol(err)
	if pe.Description == "" {
		return pe.Code
	}
	return pe.Code + ": " + pe.Description
}

// clientStateInterval is how often Run reads every client state: the floor
// under the pushed change-log entries, so that a disable reaches this
// instance within about a second even when a pub/sub message is lost.
const clientStateInterval = time.Second

// runClientStates reloads the client states every clientStateInterval
// until ctx is done.
func (s *Server) runClientStates(ctx context.Context) {
	if s.ag.store == nil {
		return
	}
	t := time.NewTicker(clientStateInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.reloadClientStates(ctx)
		}
	}
}

// reloadClientStates reads every client state and records each change it
// learns (on every instance: each keeps its own audit file).
func (s *Server) reloadClientStates(ctx context.Context) {
	states, err := s.ag.store.ClientStates(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("reading the client states failed; the last known states stay in force", "err", err)
		}
		return
	}
	s.ag.mu.Lock()
	old := s.ag.states
	s.ag.states = states
	s.ag.mu.Unlock()
	for id, st := range states {
		if o, ok := old[id]; ok && o.Changed.Equal(st.Changed) {
			continue
		}
		action, verb := "agent_enable", "enabled"
		if st.Disabled {
			action, verb = "agent_disable", "disabled"
		}
		s.log.Info("client "+verb+" by an operator", "client_id", id, "changed", st.Changed, "not_before", st.NotBefore)
		s.ag.audit.Log(ctx, AuditRecord{Time: st.Changed, Action: action, ClientID: id, Decision: DecisionAllow,
			Reason: "client " + verb + " (bffgate agents); tokens issued before " + st.NotBefore.Format(time.RFC3339) + " are refused"})
	}
}

// clientChanged is called for each DenyClient entry pushed or polled: the
// state of that client is read again at once.
func (s *Server) clientChanged(storage.DenyEntry) {
	if s.ag.store != nil {
		go s.reloadClientStates(context.Background())
	}
}

// clientDisabled reports why the client id may get no grant now, or "".
func (s *Server) clientDisabled(id string) string {
	if cl := s.client(id); cl != nil && cl.Disabled {
		return fmt.Sprintf("client %q is disabled in the configuration", id)
	}
	s.ag.mu.RLock()
	st := s.ag.states[id]
	s.ag.mu.RUnlock()
	if st.Disabled {
		return fmt.Sprintf("client %q is disabled (bffgate agents disable)", id)
	}
	return ""
}

// tokenRefused reports why a token of this issuer is refused because of
// its client's state, or "": the client is disabled, or the token was
// issued before the client's last disable.
func (s *Server) tokenRefused(tc *token.Claims, kind token.Kind) string {
	id := tc.ClientID
	if id == "" && kind == token.ID && len(tc.Audience) > 0 {
		// An ID token names its client in aud (OpenID Connect Core §2).
		id = tc.Audience[0]
	}
	if why := s.clientDisabled(id); why != "" {
		return why
	}
	s.ag.mu.RLock()
	st := s.ag.states[id]
	s.ag.mu.RUnlock()
	// iat has a resolution of one second; a token of the second of the
	// disable is refused too.
	if !st.NotBefore.IsZero() && !tc.IssuedAt.After(st.NotBefore.Truncate(time.Second)) {
		return fmt.Sprintf("client %q was disabled at %s; its tokens issued before stay revoked", id, st.NotBefore.UTC().Format(time.RFC3339))
	}
	return ""
}

// refuseDisabled is the unauthorized_client error for a disabled client.
func refuseDisabled(why string) error {
	return protocol.ErrUnauthorizedClient.WithDescription("%s; it gets no tokens until an operator enables it", why)
}

// SetClientDisabled disables or enables a client in st, as `bffgate
// agents disable|enable` does. The client must exist in the store's
// issuer configuration only as far as the caller checks.
func SetClientDisabled(ctx context.Context, st storage.Store, id string, disabled bool, now time.Time) (storage.ClientState, error) {
	return st.SetClientDisabled(ctx, id, disabled, now)
}

// grantAudit is what a token response's audit record names.
type grantAudit struct {
	subject   string
	audience  []string
	grantID   string
	tokenHash string
}

// tokenDigest names a token in an audit record or log: the first 16 bytes
// of its SHA-256, base64url. Never the token.
func tokenDigest(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return "sha256:" + base64.RawURLEncoding.EncodeToString(sum[:16])
}

// auditGrant records the outcome of a token request.
func (s *Server) auditGrant(c *fiber.Ctx, cl *client, method, gt string, form url.Values, resp tokenResponse, err error) {
	r := AuditRecord{Action: "token", ClientID: cl.ID, GrantType: clip(gt, 96), AuthMethod: method, Resource: clip(form.Get("resource"), 255)}
	if err != nil {
		r.Decision, r.Reason, r.Scope = DecisionDeny, reasonOf(err), clip(form.Get("scope"), 255)
	} else {
		r.Decision, r.Subject, r.Audience, r.Scope = DecisionAllow, resp.audit.subject, resp.audit.audience, resp.Scope
		r.TokenID = resp.audit.tokenHash
		if resp.audit.grantID != "" {
			r.TokenID = resp.audit.grantID
		}
	}
	s.audit(c, r)
}
