// Package trust verifies JWTs of other issuers the embedded issuer is
// configured to trust: the subject tokens of the Security Token Service
// case of RFC 8693 (a Keycloak or Entra access token in, a bffgate token
// out), the assertions of the JWT bearer grant (RFC 7523 §2.1: a workload
// of another domain, or an MCP client doing workload identity federation),
// and any other grant that takes a foreign JWT as proof.
//
// Each trusted issuer names its issuer identifier (the iss its tokens
// carry, compared as a string), where its keys are (a JWKS URL, fetched
// with a timeout and cached by go-oidc's RemoteKeySet, which fetches again
// when it meets an unknown kid; or a JWKS file read at start), the
// algorithms it signs with (asymmetric only: never none, never an HMAC alg,
// whose "key" would be the published public key), the audiences a token
// must carry one of, and how its subjects map onto this issuer's.
//
// # Security
//
// The subject mapping decides whose tokens a foreign token becomes. With
// "keep" a foreign sub equal to a local user's subject becomes that user:
// use it only for an issuer that shares this issuer's users (a federation).
// "prefix" keeps the namespaces apart; "lookup" maps onto a configured user
// by a claim the foreign issuer vouches for (email, preferred_username,
// sub). A foreign subject never becomes a client (the sub prefix of a
// client_credentials token is refused).
package trust

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/bffgate/bffgate/internal/bodylimit"
)

// Subject mapping modes.
const (
	// MapKeep keeps the foreign sub as is.
	MapKeep = "keep"
	// MapPrefix prepends Mapping.Prefix to the foreign sub.
	MapPrefix = "prefix"
	// MapLookup finds the configured user whose Mapping.Claim value the
	// foreign token's claim of the same name holds.
	MapLookup = "lookup"
)

// allowedAlgs are the algorithms a trusted issuer may use: asymmetric
// ones, verified with its public keys.
var allowedAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Issuer is one trusted issuer. Its yaml tags are the keys of bffgate's
// issuer.trusted_issuers[] entries.
type Issuer struct {
	// Issuer is the issuer identifier: the iss its tokens carry, compared
	// exactly. Required, unique.
	Issuer string `yaml:"issuer"`
	// JWKSURL is where its JSON Web Key Set is (an https URL, or http on a
	// loopback host). One of JWKSURL and JWKSFile is required.
	JWKSURL string `yaml:"jwks_url"`
	// JWKSFile is a JSON Web Key Set file read at start, for an issuer
	// whose keys are distributed out of band.
	JWKSFile string `yaml:"jwks_file"`
	// Algorithms are the JWS algs accepted; empty means RS256. Only RS,
	// PS, ES and EdDSA algs.
	Algorithms []string `yaml:"algorithms"`
	// Audience lists the aud values accepted: a token must carry at least
	// one (RFC 7519 §4.1.3). Required: a token made for another service
	// of that issuer must not be usable here.
	Audience []string `yaml:"audience"`
	// Subject says how the foreign sub maps onto this issuer's subjects.
	Subject Mapping `yaml:"subject"`
	// Scopes are the scopes a token of this issuer counts as holding when
	// it carries no scope (or scp) claim of its own; when it does, only
	// those of its scopes listed here count. Empty means the token's own
	// scopes, as they are.
	Scopes []string `yaml:"scopes"`
}

// Mapping is the subject mapping of a trusted issuer.
type Mapping struct {
	// Mode is keep (default), prefix or lookup.
	Mode string `yaml:"mode"`
	// Prefix is prepended to the foreign sub with mode prefix, e.g.
	// "keycloak:". Required with prefix.
	Prefix string `yaml:"prefix"`
	// Claim is the claim matched against users with mode lookup: email,
	// preferred_username (the user's username) or sub (the user's
	// subject). Default email.
	Claim string `yaml:"claim"`
}

// FieldError is a configuration error at one key of a trusted issuer;
// Path is relative to the list (trusted_issuers[0].jwks_url).
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// Config configures a Set.
type Config struct {
	// Issuers are the trusted issuers; an empty list makes a Set that
	// trusts no one.
	Issuers []Issuer
	// HTTPClient fetches JWKS URLs; nil means a client with a 5s timeout.
	HTTPClient *http.Client
	// Lookup maps a claim value onto a local user's subject, for mode
	// lookup; claim is email, preferred_username or sub. Required when an
	// issuer uses lookup.
	Lookup func(claim, value string) (subject string, ok bool)
	// ReservedPrefix is a subject prefix no mapped subject may begin
	// with (the issuer's client subject prefix).
	ReservedPrefix string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Errors of Verify. Each is wrapped with the detail; callers branch with
// errors.Is.
var (
	// ErrUntrusted: the token's iss is no trusted issuer.
	ErrUntrusted = errors.New("trust: the token's issuer is not trusted")
	// ErrMalformed: not a compact JWS with a JSON payload.
	ErrMalformed = errors.New("trust: the token is not a well-formed signed JWT")
	// ErrInvalid: the signature, alg, expiry or audience check failed.
	ErrInvalid = errors.New("trust: the token does not verify")
	// ErrSubject: the subject cannot be mapped.
	ErrSubject = errors.New("trust: the token's subject cannot be mapped")
	// ErrUnavailable: the issuer's keys cannot be fetched (its JWKS URL
	// failed or timed out): not the token's fault; retry later.
	ErrUnavailable = errors.New("trust: the trusted issuer's keys cannot be fetched")
)

// Token is a verified foreign token.
type Token struct {
	// Issuer is the trusted issuer's identifier.
	Issuer string
	// Subject is the mapped subject; ForeignSubject the token's own sub.
	Subject, ForeignSubject string
	Audience                []string
	Expiry                  time.Time
	// Scope is the scope the token counts as holding (see Issuer.Scopes),
	// space-delimited.
	Scope string
	// ClientID is the token's client_id (or azp), "" when it has none.
	ClientID string
	// Claims are every claim of the token.
	Claims map[string]any
}

type verifier struct {
	cfg Issuer
	v   *oidc.IDTokenVerifier
}

// Set verifies tokens of the trusted issuers. It is safe for concurrent
// use.
type Set struct {
	byIssuer map[string]*verifier
	lookup   func(claim, value string) (string, bool)
	reserved string
	client   *http.Client
}

// New validates cfg and returns a Set. JWKS files are read now; JWKS URLs
// on first use. Errors are *FieldError.
func New(cfg Config) (*Set, error) {
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	cfg.HTTPClient = bodylimit.Client(cfg.HTTPClient, MaxJWKSSize)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Set{byIssuer: map[string]*verifier{}, lookup: cfg.Lookup, reserved: cfg.ReservedPrefix, client: cfg.HTTPClient}
	for i, is := range cfg.Issuers {
		f := fmt.Sprintf("trusted_issuers[%d]", i)
		fail := func(key, format string, args ...any) (*Set, error) {
			return nil, &FieldError{Path: f + key, Msg: fmt.Sprintf(format, args...)}
		}
		if is.Issuer == "" {
			return fail(".issuer", "is required (the iss of the issuer's tokens)")
		}
		if u, err := url.Parse(is.Issuer); err != nil || !u.IsAbs() {
			return fail(".issuer", "%q is not an absolute URL", is.Issuer)
		}
		if s.byIssuer[is.Issuer] != nil {
			return fail(".issuer", "%q is listed twice", is.Issuer)
		}
		is.Algorithms = slices.Clone(is.Algorithms)
		if len(is.Algorithms) == 0 {
			is.Algorithms = []string{"RS256"}
		}
		for j, a := range is.Algorithms {
			if !slices.Contains(allowedAlgs, a) {
				return fail(fmt.Sprintf(".algorithms[%d]", j), "%q is not accepted: want one of %s (never none, never an HMAC alg, which would take the public key as a shared secret)", a, strings.Join(allowedAlgs, ", "))
			}
		}
		if len(is.Audience) == 0 {
			return fail(".audience", "is required: the aud values that name this issuer as the token's recipient (a token for another service must not be accepted here)")
		}
		for j, a := range is.Audience {
			if a == "" {
				return fail(fmt.Sprintf(".audience[%d]", j), "is empty")
			}
		}
		is.Audience = slices.Clone(is.Audience)
		is.Scopes = slices.Clone(is.Scopes)
		switch is.Subject.Mode {
		case "":
			is.Subject.Mode = MapKeep
		case MapKeep, MapPrefix, MapLookup:
		default:
			return fail(".subject.mode", "%q is not keep, prefix or lookup", is.Subject.Mode)
		}
		switch {
		case is.Subject.Mode == MapPrefix && is.Subject.Prefix == "":
			return fail(".subject.prefix", "is required with mode prefix (e.g. \"keycloak:\")")
		case is.Subject.Mode != MapPrefix && is.Subject.Prefix != "":
			return fail(".subject.prefix", "is set but mode is %s; set mode: prefix, or remove prefix", is.Subject.Mode)
		case is.Subject.Mode == MapPrefix && s.reserved != "" && strings.HasPrefix(is.Subject.Prefix, s.reserved):
			return fail(".subject.prefix", "%q begins with %q, which is reserved for clients' own tokens", is.Subject.Prefix, s.reserved)
		}
		switch {
		case is.Subject.Mode == MapLookup && is.Subject.Claim == "":
			is.Subject.Claim = "email"
		case is.Subject.Mode == MapLookup:
			if is.Subject.Claim != "email" && is.Subject.Claim != "preferred_username" && is.Subject.Claim != "sub" {
				return fail(".subject.claim", "%q is not email, preferred_username or sub", is.Subject.Claim)
			}
		case is.Subject.Claim != "":
			return fail(".subject.claim", "is set but mode is %s; set mode: lookup, or remove claim", is.Subject.Mode)
		}
		if is.Subject.Mode == MapLookup && cfg.Lookup == nil {
			return fail(".subject.mode", "lookup needs the issuer's users (Config.Lookup is nil)")
		}
		var ks oidc.KeySet
		switch {
		case is.JWKSURL != "" && is.JWKSFile != "":
			return fail(".jwks_file", "is set together with jwks_url; keep one")
		case is.JWKSURL != "":
			if err := checkJWKSURL(is.JWKSURL); err != nil {
				return fail(".jwks_url", "%v", err)
			}
			// The context carries the HTTP client for every fetch the
			// key set makes (go-oidc keeps it); its timeout bounds each.
			ks = oidc.NewRemoteKeySet(oidc.ClientContext(context.Background(), cfg.HTTPClient), is.JWKSURL)
		case is.JWKSFile != "":
			keys, err := readJWKSFile(is.JWKSFile)
			if err != nil {
				return fail(".jwks_file", "%v", err)
			}
			ks = &oidc.StaticKeySet{PublicKeys: keys}
		default:
			return fail(".jwks_url", "is required (or jwks_file): where the issuer's public keys are")
		}
		v := oidc.NewVerifier(is.Issuer, ks, &oidc.Config{
			SupportedSigningAlgs: is.Algorithms,
			SkipClientIDCheck:    true, // the audience is checked against the list below
			Now:                  cfg.Now,
		})
		s.byIssuer[is.Issuer] = &verifier{cfg: is, v: v}
	}
	return s, nil
}

func checkJWKSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		h := u.Hostname()
		if h == "localhost" || strings.HasPrefix(h, "127.") || h == "::1" {
			return nil
		}
		return fmt.Errorf("%q is plain http on a host that is not loopback: the keys could be replaced in transit; use https", s)
	}
	return fmt.Errorf("%q is not an https URL", s)
}

// MaxJWKSSize bounds the body of a JWKS URL's response: go-oidc reads it
// whole, and an endpoint that answers without end must not exhaust the
// issuer's memory (a real key set is a few KiB).
const MaxJWKSSize = 1 << 20

// readJWKSFile reads the public keys of a JWKS file.
func readJWKSFile(path string) ([]crypto.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("%s is not a JSON Web Key Set: %v", path, err)
	}
	var out []crypto.PublicKey
	for i, k := range set.Keys {
		if !k.IsPublic() {
			return nil, fmt.Errorf("%s: key %d (kid %q) is a private key; publish only public keys", path, i, k.KeyID)
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		out = append(out, k.Key)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no signing key", path)
	}
	return out, nil
}

// Len reports how many issuers are trusted.
func (s *Set) Len() int { return len(s.byIssuer) }

// Trusts reports whether iss is a trusted issuer.
func (s *Set) Trusts(iss string) bool { return s.byIssuer[iss] != nil }

// Issuer returns the validated configuration of the trusted issuer iss
// (defaults filled), for a grant that applies its own rules on top of
// Verify (the JWT bearer grant caps the scope by Issuer.Scopes).
func (s *Set) Issuer(iss string) (Issuer, bool) {
	v := s.byIssuer[iss]
	if v == nil {
		return Issuer{}, false
	}
	out := v.cfg
	out.Algorithms = slices.Clone(out.Algorithms)
	out.Audience = slices.Clone(out.Audience)
	out.Scopes = slices.Clone(out.Scopes)
	return out, true
}

// PeekIssuer returns the unverified iss of a compact JWS, "" when raw is
// not one. It selects the verifier; nothing is trusted before Verify.
func PeekIssuer(raw string) string {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	// A map, not a struct: encoding/json matches struct tags without
	// case, and "ISS" is not the iss claim (found by FuzzPeekIssuer).
	var c map[string]any
	if json.Unmarshal(b, &c) != nil {
		return ""
	}
	iss, _ := c["iss"].(string)
	return iss
}

// Verify verifies raw as a token of a trusted issuer: issuer, signature
// with an accepted alg and a key of that issuer, exp and nbf, one accepted
// aud; then maps its subject.
func (s *Set) Verify(ctx context.Context, raw string) (*Token, error) {
	iss := PeekIssuer(raw)
	if iss == "" {
		return nil, fmt.Errorf("%w: no iss claim in a compact JWS payload", ErrMalformed)
	}
	v := s.byIssuer[iss]
	if v == nil {
		return nil, fmt.Errorf("%w: %q", ErrUntrusted, iss)
	}
	idt, err := v.v.Verify(oidc.ClientContext(ctx, s.client), raw)
	if err != nil {
		var exp *oidc.TokenExpiredError
		if errors.As(err, &exp) {
			return nil, fmt.Errorf("%w: it expired", ErrInvalid)
		}
		// go-oidc wraps a failed JWKS fetch as "failed to verify
		// signature: fetching keys ..." (no typed error).
		if strings.Contains(err.Error(), "fetching keys") {
			return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, iss, err)
		}
		return nil, fmt.Errorf("%w: %s", ErrInvalid, describe(err))
	}
	if !slices.ContainsFunc(idt.Audience, func(a string) bool { return slices.Contains(v.cfg.Audience, a) }) {
		return nil, fmt.Errorf("%w: it is not for this issuer (its aud holds none of %s)", ErrInvalid, strings.Join(v.cfg.Audience, ", "))
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
	}
	t := &Token{Issuer: iss, ForeignSubject: idt.Subject, Audience: idt.Audience, Expiry: idt.Expiry, Claims: claims}
	if cid, ok := claims["client_id"].(string); ok {
		t.ClientID = cid
	} else if azp, ok := claims["azp"].(string); ok {
		t.ClientID = azp
	}
	t.Scope = v.scope(claims)
	if t.Subject, err = s.mapSubject(v.cfg, idt.Subject, claims); err != nil {
		return nil, err
	}
	return t, nil
}

// scope is the scope a token counts as holding.
func (v *verifier) scope(claims map[string]any) string {
	var own []string
	has := false
	switch sc := claims["scope"].(type) {
	case string:
		own, has = strings.Fields(sc), true
	}
	if !has {
		if scp, ok := claims["scp"].([]any); ok {
			has = true
			for _, x := range scp {
				if s, ok := x.(string); ok {
					own = append(own, s)
				}
			}
		} else if scp, ok := claims["scp"].(string); ok {
			own, has = strings.Fields(scp), true
		}
	}
	switch {
	case !has:
		own = v.cfg.Scopes
	case len(v.cfg.Scopes) > 0:
		own = slices.DeleteFunc(own, func(s string) bool { return !slices.Contains(v.cfg.Scopes, s) })
	}
	return strings.Join(own, " ")
}

func (s *Set) mapSubject(is Issuer, sub string, claims map[string]any) (string, error) {
	if sub == "" {
		return "", fmt.Errorf("%w: it has no sub", ErrSubject)
	}
	var out string
	switch is.Subject.Mode {
	case MapKeep:
		out = sub
	case MapPrefix:
		out = is.Subject.Prefix + sub
	case MapLookup:
		v, _ := claims[is.Subject.Claim].(string)
		if v == "" {
			return "", fmt.Errorf("%w: it has no %s claim to find its user by", ErrSubject, is.Subject.Claim)
		}
		if is.Subject.Claim == "email" {
			if ev, ok := claims["email_verified"].(bool); ok && !ev {
				return "", fmt.Errorf("%w: it says its email is not verified", ErrSubject)
			}
		}
		u, ok := s.lookup(is.Subject.Claim, v)
		if !ok {
			return "", fmt.Errorf("%w: no user of this issuer has its %s", ErrSubject, is.Subject.Claim)
		}
		return u, nil
	}
	if len(out) > 255 {
		return "", fmt.Errorf("%w: its mapped subject is longer than 255 characters", ErrSubject)
	}
	if s.reserved != "" && strings.HasPrefix(out, s.reserved) {
		return "", fmt.Errorf("%w: its mapped subject begins with %q, which names this issuer's clients", ErrSubject, s.reserved)
	}
	return out, nil
}

// describe shortens a go-oidc error for an error_description: it never
// holds the token, but holds Go-ish prefixes.
func describe(err error) string {
	msg := strings.TrimPrefix(err.Error(), "oidc: ")
	switch {
	case strings.Contains(msg, "failed to verify signature"):
		return "its signature does not verify with the issuer's keys"
	case strings.Contains(msg, "unexpected signature algorithm"), strings.Contains(msg, "signing algorithm"):
		return "it is signed with an algorithm not accepted for this issuer"
	case strings.Contains(msg, "malformed jwt"):
		return "it is not a well-formed JWT"
	case strings.Contains(msg, "before the nbf"), strings.Contains(msg, "not valid yet"):
		return "it is not valid yet (nbf in the future)"
	}
	if len(msg) > 160 {
		msg = msg[:160]
	}
	return msg
}
