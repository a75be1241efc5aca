package bff

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/bff/authz"
	"github.com/bffgate/bffgate/bff/proxy"
	"github.com/bffgate/bffgate/session"
)

// IdentityHeaders names the headers that tell a route's upstream who the
// user is, each set by the gateway only (the browser's copies are
// dropped) and only when the session has the claim; empty names are not
// sent. Its yaml tags are the keys of gateway.routes[].identity_headers.
//
// The plain headers are oauth2-proxy's X-Auth-Request-* for upstreams that
// trust the network path from the gateway. Assertion is a short-lived JWT
// signed by the gateway's own key (Pomerium's X-Pomerium-Jwt-Assertion),
// which an upstream verifies against the gateway's JWKS
// (BasePath + "/jwks") without ever seeing the provider's tokens.
type IdentityHeaders struct {
	// User carries the sub claim, e.g. X-Auth-Request-User.
	User string `yaml:"user"`
	// Email carries the email claim, e.g. X-Auth-Request-Email.
	Email string `yaml:"email"`
	// Groups carries the groups claim joined by commas, e.g.
	// X-Auth-Request-Groups.
	Groups string `yaml:"groups"`
	// PreferredUsername carries preferred_username, e.g.
	// X-Auth-Request-Preferred-Username.
	PreferredUsername string `yaml:"preferred_username"`
	// Assertion carries the signed identity assertion, e.g.
	// X-Bffgate-Jwt-Assertion: an ES256 JWT with iss (the gateway's public
	// URL), aud (the public URL and the route's prefix, such as
	// https://app.example.com/api/), sub, email, groups, roles, iat, nbf
	// and an exp AssertionLifetime later.
	Assertion string `yaml:"assertion"`
}

// AssertionLifetime is how long an identity assertion is valid: one
// request's worth, with room for clock skew at the upstream.
const AssertionLifetime = 2 * time.Minute

func (h IdentityHeaders) names() [][2]string {
	return [][2]string{{"user", h.User}, {"email", h.Email}, {"groups", h.Groups}, {"preferred_username", h.PreferredUsername}, {"assertion", h.Assertion}}
}

// empty reports whether no identity header is configured.
func (h IdentityHeaders) empty() bool {
	for _, n := range h.names() {
		if n[1] != "" {
			return false
		}
	}
	return true
}

// managedHeaders are set by the proxy itself: an identity header may not
// take their names.
var managedHeaders = []string{"host", "authorization", "cookie", "content-length", "connection", "forwarded",
	"x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "upgrade", "transfer-encoding", "te", "trailer", "keep-alive"}

// checkIdentity validates a route's identity_headers.
func checkIdentity(i int, r Route) []error {
	errs := checkIdentityHeaders(fmt.Sprintf("routes[%d].identity_headers", i), r.Identity)
	if !r.Identity.empty() && (r.Policy == PolicyClient || r.Policy == PolicyNone) {
		errs = append(errs, ferr(fmt.Sprintf("routes[%d].identity_headers", i), "says who the user is, but policy %s calls the upstream without a user: use policy user or user-optional", r.Policy))
	}
	return errs
}

// checkIdentityHeaders validates the header names of identity_headers at
// prefix (a route's or a forward-auth rule's).
func checkIdentityHeaders(prefix string, h IdentityHeaders) []error {
	var errs []error
	seen := map[string]string{}
	for _, n := range h.names() {
		if n[1] == "" {
			continue
		}
		key := prefix + "." + n[0]
		lower := strings.ToLower(n[1])
		switch {
		case !validHeaderName(n[1]) || strings.Contains(n[1], "_"):
			errs = append(errs, ferr(key, "%q is not a header name (letters, digits and -; no _, which upstreams may read as -)", n[1]))
		case slices.Contains(managedHeaders, lower):
			errs = append(errs, ferr(key, "%q is set by the proxy itself; choose another name such as X-Auth-Request-User", n[1]))
		case seen[lower] != "":
			errs = append(errs, ferr(key, "%q is also identity_headers.%s", n[1], seen[lower]))
		}
		seen[lower] = n[0]
	}
	return errs
}

// identity is a route's compiled identity headers.
type identity struct {
	IdentityHeaders
	aud    string // the assertion's audience
	source authz.Source
	signer *assertionSigner
}

// headers returns the identity headers for s.
func (id *identity) headers(s *session.Session, now time.Time) ([]proxy.Header, error) {
	claims, err := sessionClaims(id.source, s)
	if err != nil {
		return nil, err
	}
	return id.headersFrom(s, claims, now)
}

// headersFrom is headers with the claims of id.source already read.
func (id *identity) headersFrom(s *session.Session, claims map[string]any, now time.Time) ([]proxy.Header, error) {
	var out []proxy.Header
	add := func(name, value string) {
		if name != "" && value != "" {
			out = append(out, proxy.Header{Name: name, Value: value})
		}
	}
	str := func(k string) string { v, _ := claims[k].(string); return v }
	sub := s.Subject
	if sub == "" {
		sub = str("sub")
	}
	add(id.User, sub)
	add(id.Email, str("email"))
	add(id.Groups, strings.Join(authz.Strings(claims["groups"]), ","))
	add(id.PreferredUsername, str("preferred_username"))
	if id.Assertion != "" {
		tok, err := id.signer.sign(assertionClaims{
			Issuer: id.signer.issuer, Audience: id.aud, Subject: sub,
			Email: str("email"), Groups: authz.Strings(claims["groups"]), Roles: authz.Strings(claims["roles"]),
			IssuedAt: now.Unix(), NotBefore: now.Unix(), Expiry: now.Add(AssertionLifetime).Unix(),
		})
		if err != nil {
			return nil, err
		}
		add(id.Assertion, tok)
	}
	return out, nil
}

type assertionClaims struct {
	Issuer    string   `json:"iss"`
	Audience  string   `json:"aud"`
	Subject   string   `json:"sub"`
	Email     string   `json:"email,omitempty"`
	Groups    []string `json:"groups,omitempty"`
	Roles     []string `json:"roles,omitempty"`
	IssuedAt  int64    `json:"iat"`
	NotBefore int64    `json:"nbf"`
	Expiry    int64    `json:"exp"`
	JTI       string   `json:"jti"`
}

// assertionSigner signs identity assertions with the gateway's key and
// publishes its public half as a JWKS (RFC 7517 §5).
type assertionSigner struct {
	issuer string
	signer jose.Signer
	jwks   []byte
}

func newAssertionSigner(key *ecdsa.PrivateKey, issuer string) (*assertionSigner, error) {
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, err
		}
	}
	if key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("bff: AssertionKey: want a P-256 key (ES256)")
	}
	pub := jose.JSONWebKey{Key: &key.PublicKey, Algorithm: string(jose.ES256), Use: "sig"}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	pub.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: pub.KeyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, err
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}})
	if err != nil {
		return nil, err
	}
	return &assertionSigner{issuer: issuer, signer: sig, jwks: jwks}, nil
}

func (a *assertionSigner) sign(c assertionClaims) (string, error) {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", err
	}
	c.JTI = base64.RawURLEncoding.EncodeToString(id[:])
	// The claims are marshalled here and signed as the payload: go-jose's
	// jwt builder would marshal them, decode them into a map and marshal
	// that again (a third of the signing time, BenchmarkForwardAuth).
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	sig, err := a.signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return sig.CompactSerialize()
}

// jwks serves the public key of identity assertions.
func (g *Gateway) jwks(c *fiber.Ctx) error {
	c.Set(fiber.HeaderContentType, "application/jwk-set+json")
	c.Set(fiber.HeaderCacheControl, "public, max-age=300")
	return c.Send(g.signer.jwks)
}
