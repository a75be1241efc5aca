package issuer

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bffgate/bffgate/issuer/protocol"
	"github.com/bffgate/bffgate/issuer/storage"
	"github.com/bffgate/bffgate/web"
)

// Where a client comes from (client.source).
const (
	sourceConfig  = ""        // issuer.clients
	sourceCIMD    = "cimd"    // a client ID metadata document (cimd.go)
	sourceDynamic = "dynamic" // dynamic registration (RFC 7591, register.go)
)

// mcpState is the state of the clients that are not configured: metadata
// documents and their metrics.
type mcpState struct {
	cimdFetches   *prometheus.CounterVec
	registrations *prometheus.CounterVec
}

func (s *Server) newMCPState() error {
	s.mcp = &mcpState{
		cimdFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_issuer_client_metadata_total",
			Help: "Client ID metadata document look-ups, by result: cached, fetched, refused (a private address, too large, too slow, a redirect, a client_id mismatch, invalid metadata).",
		}, []string{"result"}),
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_issuer_client_registrations_total",
			Help: "Dynamic client registrations (RFC 7591, 7592) by result: registered, deleted, rate_limited.",
		}, []string{"result"}),
	}
	s.cimd = newCIMDCache(s.cfg)
	if r := s.cfg.Registerer; r != nil {
		for _, c := range []prometheus.Collector{s.mcp.cimdFetches, s.mcp.registrations} {
			if err := r.Register(c); err != nil {
				return fmt.Errorf("issuer: register metrics: %w", err)
			}
		}
	}
	return nil
}

// lookupClient returns the client with id: a configured one, or, when
// enabled, the one an https client_id's metadata document describes. It
// returns nil, nil for an unknown id, and an error (errCIMD) when a
// document cannot be used; the error's text is fit for the user.
func (s *Server) lookupClient(ctx context.Context, id string) (*client, error) {
	if cl := s.client(id); cl != nil {
		return cl, nil
	}
	if s.cfg.ClientMetadata.Enabled && isCIMD(id) {
		return s.cimdClient(id)
	}
	if s.cfg.Registration.Enabled && strings.HasPrefix(id, dynamicIDPrefix) && len(id) <= 64 {
		return s.registeredClient(ctx, id)
	}
	return nil, nil
}

// knownClient is lookupClient without a fetch error: nil when the client
// cannot be found (token checks at userinfo and introspection).
func (s *Server) knownClient(ctx context.Context, id string) *client {
	cl, err := s.lookupClient(ctx, id)
	if err != nil {
		return nil
	}
	return cl
}

// thirdParty reports whether the user must consent to the client's
// requests: clients that identify themselves (metadata documents, dynamic
// registration) and configured clients marked third_party.
func (c *client) thirdParty() bool { return c.source != sourceConfig || c.ThirdParty }

// displayName is the client's name for the consent page.
func (c *client) displayName() string {
	if c.name != "" {
		return c.name
	}
	return c.ID
}

// consentPage is the consent page's data for client cl's request req.
func (s *Server) consentPage(cl *client, req authRequest, u *user, fields []web.Field) web.Consent {
	d := web.Consent{
		Action: s.endpoint(pathConsent), Fields: fields,
		ClientName: cl.displayName(), ClientID: cl.ID, Kind: cl.Kind, Username: u.Username,
		Scopes: protocol.ParseScope(req.Scope), Audience: tokenAudience(cl, req.Resource),
	}
	if req.Resource != "" {
		d.Resource = req.Resource
		if r := s.resourceOf(req.Resource); r != nil && r.Name != "" {
			d.Resource = r.Name + " (" + r.URL + ")"
		}
	}
	if cl.thirdParty() {
		if ru, err := url.Parse(req.RedirectURI); err == nil {
			d.RedirectHost = ru.Host
			if d.RedirectHost == "" {
				d.RedirectHost = ru.Scheme + ":" // a private-use scheme
			}
		}
	}
	if cl.source == sourceCIMD {
		u, _ := url.Parse(cl.ID)
		d.Unverified = !s.cimdVerified(u.Hostname())
	}
	if cl.source == sourceDynamic {
		d.Unverified = true
	}
	return d
}

// DefaultConsentTTL is how long a user's consent to a third-party client
// is remembered (Config.ConsentTTL).
const DefaultConsentTTL = 90 * 24 * time.Hour

// consentStore is what the consent rules use of the store.
type consentStore interface {
	Consent(ctx context.Context, subject, clientID string, now time.Time) (storage.Consent, error)
	AddConsent(ctx context.Context, subject, clientID, resource string, scopes []string, now, expires time.Time) error
	RevokeConsent(ctx context.Context, subject, clientID string) error
}

// consentRemembered reports whether subject consented to everything req
// asks of its client: the same resource, and at least its scopes.
func (s *Server) consentRemembered(ctx context.Context, subject string, req authRequest) (bool, error) {
	var st consentStore = s.cfg.Store
	c, err := st.Consent(ctx, subject, req.ClientID, s.now())
	if err != nil {
		return false, protocol.ErrTemporarilyUnavailable.WithDescription("the consent records cannot be read; retry later").WithCause(err)
	}
	return c.Covers(req.Resource, protocol.ParseScope(req.Scope)), nil
}

// rememberConsent records the user's consent to req (per user, client,
// resource and scopes), for Config.ConsentTTL.
func (s *Server) rememberConsent(ctx context.Context, subject string, req authRequest) error {
	var st consentStore = s.cfg.Store
	now := s.now()
	if err := st.AddConsent(ctx, subject, req.ClientID, req.Resource, protocol.ParseScope(req.Scope), now, now.Add(s.cfg.ConsentTTL)); err != nil {
		return protocol.ErrTemporarilyUnavailable.WithDescription("the consent could not be recorded; retry later").WithCause(err)
	}
	return nil
}

// forgetConsent drops subject's remembered consent to a third-party
// client: revoking its refresh token (RFC 7009) is how a user or the
// client ends the relation, and the next authorization asks again.
func (s *Server) forgetConsent(ctx context.Context, cl *client, subject string) error {
	if !cl.thirdParty() || cl.Kind != "" || subject == "" {
		return nil
	}
	var st consentStore = s.cfg.Store
	if err := st.RevokeConsent(ctx, subject, cl.ID); err != nil {
		return protocol.ErrTemporarilyUnavailable.WithDescription("the consent could not be revoked; retry later").WithCause(err)
	}
	return nil
}

// tokenClient is the client an access token names, for checking the
// token (checkAudience): lookupClient, except that a metadata document is
// not fetched again. A token of such a client was issued after its
// document was checked, and stays good until its exp: a document server
// that is down, or a cache entry that lapsed, must not make every token
// the client holds inactive at introspection and userinfo. Its aud may
// then be the client itself or any registered resource (such a client
// has no resources list).
func (s *Server) tokenClient(id string) *client {
	if cl := s.client(id); cl != nil {
		return cl
	}
	if s.cfg.ClientMetadata.Enabled && isCIMD(id) {
		if _, err := s.checkCIMDURL(id); err != nil {
			return nil // no longer accepted (allowed_domains changed)
		}
		return &client{Client: Client{ID: id, Audience: []string{id}}, authMethod: authNone, source: sourceCIMD}
	}
	return s.knownClient(context.Background(), id)
}
