package issuer

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/bffgate/bffgate/issuer/protocol"
	"github.com/bffgate/bffgate/issuer/storage"
)

// GrantJWTBearer is the JWT bearer authorization grant (RFC 7523 §2.1): a
// JWT from a trusted issuer is exchanged for an access token of this one.
// It is how a workload of another domain (a JWT-SVID of a federated trust
// domain, a cloud provider's identity token) or an MCP client doing
// workload identity federation gets a token here.
const GrantJWTBearer = "urn:ietf:params:oauth:grant-type:jwt-bearer"

// Subject mapping modes of a trusted issuer.
const (
	MapKeep   = "keep"
	MapPrefix = "prefix"
	MapLookup = "lookup"
)

// TrustedIssuer is an issuer whose JWTs the JWT bearer grant accepts. Its
// yaml tags are the keys of issuer.trusted_issuers[] entries; the shape is
// that of token exchange's trusted issuers (the same key, one list).
type TrustedIssuer struct {
	// Issuer is the iss of its tokens, compared exactly. Required, unique.
	Issuer string `yaml:"issuer"`
	// JWKSURL (https, or http on loopback; fetched with a timeout, cached
	// per its HTTP cache headers, refetched on an unknown kid at most once
	// a minute) or JWKSFile (read at start) gives its public keys.
	JWKSURL  string `yaml:"jwks_url"`
	JWKSFile string `yaml:"jwks_file"`
	// Algorithms are the JWS algs accepted; empty means RS256. Asymmetric
	// only.
	Algorithms []string `yaml:"algorithms"`
	// Audience lists the aud values accepted (one must be present);
	// empty means this issuer's identifier or its token endpoint (RFC
	// 7523 §3 item 3).
	Audience []string `yaml:"audience"`
	// Subject maps the assertion's sub onto the token's sub.
	Subject SubjectMapping `yaml:"subject"`
	// Scopes caps what a token of this issuer's assertions may carry;
	// empty means none beyond the client's own scopes.
	Scopes []string `yaml:"scopes"`
}

// SubjectMapping is how a foreign sub becomes a sub here.
type SubjectMapping struct {
	// Mode: keep (the sub as is; only for an issuer that shares this
	// issuer's users), prefix (Prefix + sub: its own namespace, the
	// default), lookup (the configured user whose Claim matches the
	// assertion's claim of that name).
	Mode string `yaml:"mode"`
	// Prefix with mode prefix; default the issuer identifier and "#".
	Prefix string `yaml:"prefix"`
	// Claim with mode lookup: email (needs email_verified not false),
	// preferred_username or sub. Default email.
	Claim string `yaml:"claim"`
}

// trusted is a validated TrustedIssuer.
type trusted struct {
	TrustedIssuer
	keys keySource
}

// trustedIssuers validates cfg.TrustedIssuers; errors name the key.
func (cfg *Config) trustedIssuers() (map[string]*trusted, error) {
	out := map[string]*trusted{}
	for i, ti := range cfg.TrustedIssuers {
		f := fmt.Sprintf("trusted_issuers[%d]", i)
		fail := func(key, format string, args ...any) (map[string]*trusted, error) {
			return nil, &FieldError{Path: f + key, Msg: fmt.Sprintf(format, args...)}
		}
		if u, err := url.Parse(ti.Issuer); ti.Issuer == "" || err != nil || !u.IsAbs() {
			return fail(".issuer", "%q is not an absolute URL (the iss of its tokens)", ti.Issuer)
		}
		if ti.Issuer == cfg.Issuer {
			return fail(".issuer", "is this issuer itself; its own tokens are not assertions")
		}
		if out[ti.Issuer] != nil {
			return fail(".issuer", "%q is listed twice", ti.Issuer)
		}
		ti.Algorithms = slices.Clone(ti.Algorithms)
		if len(ti.Algorithms) == 0 {
			ti.Algorithms = []string{"RS256"}
		}
		for j, a := range ti.Algorithms {
			if err := checkAlg("assertion", a, AssertionAlgorithms); err != nil {
				return fail(fmt.Sprintf(".algorithms[%d]", j), "%v", err)
			}
		}
		switch ti.Subject.Mode {
		case "":
			ti.Subject.Mode = MapPrefix
		case MapKeep, MapPrefix, MapLookup:
		default:
			return fail(".subject.mode", "%q is not keep, prefix or lookup", ti.Subject.Mode)
		}
		if ti.Subject.Mode == MapPrefix && ti.Subject.Prefix == "" {
			ti.Subject.Prefix = ti.Issuer + "#"
		}
		if strings.HasPrefix(ti.Subject.Prefix, ClientSubjectPrefix) {
			return fail(".subject.prefix", "begins with %q, which the issuer reserves for clients' own tokens", ClientSubjectPrefix)
		}
		if ti.Subject.Mode == MapLookup {
			switch ti.Subject.Claim {
			case "":
				ti.Subject.Claim = "email"
			case "email", "preferred_username", "sub":
			default:
				return fail(".subject.claim", "%q is not email, preferred_username or sub", ti.Subject.Claim)
			}
		}
		for j, s := range ti.Scopes {
			if !slices.Contains(supportedScopes, s) {
				return fail(fmt.Sprintf(".scopes[%d]", j), "%q is not a scope of this issuer (%s)", s, strings.Join(supportedScopes, ", "))
			}
		}
		t := &trusted{TrustedIssuer: ti}
		switch {
		case (ti.JWKSURL == "") == (ti.JWKSFile == ""):
			return fail(".jwks_url", "give exactly one of jwks_url and jwks_file")
		case ti.JWKSFile != "":
			b, err := os.ReadFile(ti.JWKSFile)
			if err != nil {
				return fail(".jwks_file", "%v", err)
			}
			keys, err := parsePublicJWKS(b)
			if err != nil {
				return fail(".jwks_file", "%s: %v", ti.JWKSFile, err)
			}
			t.keys = staticKeys(keys)
		default:
			if err := validateFetchURL(ti.JWKSURL); err != nil {
				return fail(".jwks_url", "%v", err)
			}
			t.keys = &remoteKeySet{url: ti.JWKSURL, what: fmt.Sprintf("jwks_url of trusted issuer %q", ti.Issuer),
				client: cfg.HTTPClient, log: cfg.Logger.With("subsystem", "trusted-issuer-keys"),
				parse: func(b []byte) ([]jose.JSONWebKey, time.Duration, error) {
					keys, err := parsePublicJWKS(b)
					return keys, 0, err
				}}
		}
		out[ti.Issuer] = t
	}
	return out, nil
}

// maxBearerLifetime bounds how far ahead a bearer assertion's exp may lie
// (RFC 7523 §3 item 4: the server may reject an exp "unreasonably far in
// the future"): a day covers the identity tokens of cloud platforms.
const maxBearerLifetime = 24 * time.Hour

// jwtBearer is the JWT bearer grant (RFC 7523 §2.1, §3): the assertion is
// verified against its trusted issuer, its subject mapped, the scope
// capped, and an access token minted for the mapped subject with the
// authenticated client as client_id. No refresh token: the client
// presents a fresh assertion instead (RFC 7521 §4.1).
func (s *Server) jwtBearer(ctx context.Context, cl *client, form url.Values) (tokenResponse, error) {
	if !cl.hasGrant(GrantJWTBearer) {
		return tokenResponse{}, protocol.ErrUnauthorizedClient.WithDescription("client %q is not allowed the jwt-bearer grant", cl.ID)
	}
	raw := form.Get("assertion")
	if raw == "" {
		return tokenResponse{}, protocol.ErrInvalidRequest.WithDescription("assertion is missing (RFC 7523 §2.1)")
	}
	if len(form["assertion"]) > 1 {
		return tokenResponse{}, protocol.ErrInvalidRequest.WithDescription("assertion was sent more than once")
	}
	now := s.now()
	ti, c, claims, err := s.verifyBearerAssertion(raw, now)
	if err != nil {
		return tokenResponse{}, err
	}
	sub, err := s.mapSubject(ti, c.Subject, claims)
	if err != nil {
		return tokenResponse{}, err
	}
	scope := form.Get("scope")
	if err := cl.checkScope(scope); err != nil {
		return tokenResponse{}, err
	}
	scopes := protocol.ParseScope(scope)
	for _, sc := range scopes {
		if sc == ScopeOpenID || sc == ScopeOfflineAccess {
			return tokenResponse{}, protocol.ErrInvalidScope.WithDescription("scope %q is not granted for an assertion (no sign-in, no refresh token); ask for the API scopes only", sc)
		}
		if len(ti.Scopes) > 0 && !slices.Contains(ti.Scopes, sc) {
			return tokenResponse{}, protocol.ErrInvalidScope.WithDescription("scope %q exceeds what assertions of %s may get (%s)", sc, ti.Issuer, strings.Join(ti.Scopes, ", "))
		}
	}
	if c.ID != "" {
		st, ok := storage.AgentStoreOf(s.cfg.Store)
		if !ok {
			return tokenResponse{}, errors.New("the issuer's store keeps no replay record of assertions")
		}
		sum := sha256.Sum256([]byte(ti.Issuer + "\x00" + c.ID))
		err := st.UseAssertion(bgContext(ctx), "bearer:"+base64.RawURLEncoding.EncodeToString(sum[:]), c.Expiry.Time().Add(assertionLeeway), now)
		if errors.Is(err, storage.ErrReplayed) {
			s.ag.metrics.replays.Inc()
			return tokenResponse{}, invalidGrant("the assertion was already used (its jti was seen before)")
		}
		if err != nil {
			return tokenResponse{}, fmt.Errorf("record the assertion's jti: %w", err)
		}
	}
	g := grantInfo{Subject: sub, Scope: strings.Join(scopes, " ")}
	var released map[string]any
	if u := s.bySubject[sub]; u != nil {
		released = releasedClaims(u, g.Scope)
	}
	resp, _, err := s.mint(GrantJWTBearer, cl, g, false, "", released, now)
	return resp, err
}

// verifyBearerAssertion verifies a JWT bearer assertion: a trusted iss,
// an allowed alg, a key of that issuer, an accepted aud, exp present and
// not past (at most maxBearerLifetime ahead), iat and nbf not in the
// future. Failures are invalid_grant (RFC 7523 §3.1), an unreachable key
// set temporarily_unavailable... as invalid_grant naming it.
func (s *Server) verifyBearerAssertion(raw string, now time.Time) (*trusted, jwt.Claims, map[string]any, error) {
	var c jwt.Claims
	if len(raw) > maxAssertionLen || !canonicalSegments(raw) {
		return nil, c, nil, invalidGrant("the assertion is not a compact JWS of canonical base64url parts (at most %d bytes)", maxAssertionLen)
	}
	h, err := peekHeader(raw)
	if err != nil {
		return nil, c, nil, invalidGrant("the assertion %v", err)
	}
	unverified, err := peekClaims(raw)
	if err != nil {
		return nil, c, nil, invalidGrant("the assertion's payload is not a JSON claims set")
	}
	ti := s.ag.trusted[unverified.Issuer]
	if ti == nil {
		return nil, c, nil, invalidGrant("the assertion's issuer %q is not a trusted issuer of this server", clip(unverified.Issuer, 255))
	}
	if err := checkAlg("assertion", h.Alg, ti.Algorithms); err != nil {
		return nil, c, nil, invalidGrant("%v", err)
	}
	var claims map[string]any
	err = verifyJWS("assertion", raw, h, ti.Algorithms, ti.keys, now, &c, &claims)
	if err != nil {
		if errors.Is(err, errKeySetFetch) {
			return nil, c, nil, invalidGrant("the keys of trusted issuer %s could not be fetched; retry later", ti.Issuer).WithCause(err)
		}
		return nil, c, nil, invalidGrant("%v", err)
	}
	auds := ti.Audience
	if len(auds) == 0 {
		auds = []string{s.cfg.Issuer, s.endpoint(pathToken)}
	}
	switch {
	case c.Issuer != ti.Issuer:
		return nil, c, nil, invalidGrant("the assertion's iss changed between reads")
	case c.Subject == "":
		return nil, c, nil, invalidGrant("the assertion has no sub (RFC 7523 §3 item 2)")
	case !slices.ContainsFunc(c.Audience, func(a string) bool { return slices.Contains(auds, a) }):
		return nil, c, nil, invalidGrant("the assertion's aud must name one of %s", strings.Join(auds, ", "))
	}
	if _, err := s.checkAssertionTimes("assertion", c, maxBearerLifetime, now); err != nil {
		return nil, c, nil, invalidGrant("%v", err)
	}
	return ti, c, claims, nil
}

// mapSubject maps a trusted issuer's sub onto this issuer's.
func (s *Server) mapSubject(ti *trusted, sub string, claims map[string]any) (string, error) {
	var out string
	switch ti.Subject.Mode {
	case MapKeep:
		out = sub
	case MapPrefix:
		out = ti.Subject.Prefix + sub
	case MapLookup:
		v, _ := claims[ti.Subject.Claim].(string)
		if v == "" {
			return "", invalidGrant("the assertion has no %s claim to find its user by", ti.Subject.Claim)
		}
		if ti.Subject.Claim == "email" {
			if ev, ok := claims["email_verified"].(bool); ok && !ev {
				return "", invalidGrant("the assertion's email is not verified (email_verified false)")
			}
		}
		for _, u := range s.users {
			var uv string
			switch ti.Subject.Claim {
			case "email":
				uv, _ = u.Claims["email"].(string)
			case "preferred_username":
				uv = u.Username
			case "sub":
				uv = u.Subject
			}
			if uv != "" && uv == v {
				out = u.Subject
			}
		}
		if out == "" {
			return "", invalidGrant("no user of this issuer has the assertion's %s", ti.Subject.Claim)
		}
	}
	if strings.HasPrefix(out, ClientSubjectPrefix) {
		return "", invalidGrant("the assertion's subject maps to %q, which begins with the prefix reserved for clients", clip(out, 64))
	}
	return out, nil
}
