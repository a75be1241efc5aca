package demoapi

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Token formats reported by /api/whoami.
const (
	FormatJWT          = "jwt"
	FormatIntrospected = "introspected"
)

// Principal is what the API learned from a valid access token.
type Principal struct {
	Subject   string
	ClientID  string
	Issuer    string
	Audience  []string
	Scopes    []string
	JTI       string
	ExpiresAt time.Time // zero when the token has no exp (introspection only)
	IssuedAt  time.Time // zero when unknown
	// Format is FormatJWT or FormatIntrospected.
	Format string
	// TypHeader is the JOSE header typ of the token ("at+jwt"), or "" when
	// the token is opaque.
	TypHeader string
	// Alg is the JOSE header alg: the signature algorithm of a JWS
	// ("ES256"), or the key management algorithm of a JWE ("dir"); "" when
	// the token is opaque.
	Alg string
	// Enc is the content encryption algorithm of a JWE ("A128CBC-HS256");
	// "" for a signed or opaque token.
	Enc string
	// Client reports a token a client got for itself with the
	// client_credentials grant (RFC 6749 §4.4): Subject then names the
	// client, not a user, and nothing may be kept or read per user with
	// it. bffgate's issuer marks such tokens with the gty claim (and in
	// introspection) "client_credentials", and gives them the sub
	// "client:<client_id>"; Auth0 writes gty "client-credentials".
	Client bool
}

// clientGrant reports whether a gty value marks a client_credentials token.
func clientGrant(gty string) bool {
	return gty == "client_credentials" || gty == "client-credentials"
}

// Encrypted reports whether the token was a JWE (RFC 7516).
func (p *Principal) Encrypted() bool { return p.Enc != "" }

// HasScope reports whether s is among the token's scopes.
func (p *Principal) HasScope(s string) bool { return slices.Contains(p.Scopes, s) }

// verifier turns a bearer token into a Principal. Errors wrap ErrInvalidToken,
// ErrExpired or ErrUnavailable.
type verifier interface {
	verify(ctx context.Context, token string) (*Principal, error)
	ready(ctx context.Context) error
}

// jwtVerifier checks JWT access tokens locally (RFC 9068 §4).
type jwtVerifier struct {
	cfg   *Config
	disco *discoverer

	mu   sync.Mutex
	keys *keySet // created once discovery names jwks_uri
}

var _ verifier = (*jwtVerifier)(nil)

func (v *jwtVerifier) keySet(ctx context.Context) (*keySet, *metadata, error) {
	md, err := v.disco.get(ctx)
	if err != nil {
		return nil, nil, err
	}
	if md.JWKSURI == "" {
		return nil, nil, fmt.Errorf("%w: the discovery document has no jwks_uri", ErrUnavailable)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.keys == nil {
		v.keys = newKeySet(md.JWKSURI, v.cfg, v.cfg.Logger)
	}
	return v.keys, md, nil
}

func (v *jwtVerifier) ready(ctx context.Context) error {
	ks, _, err := v.keySet(ctx)
	if err != nil {
		return err
	}
	return ks.ready(ctx)
}

// accessClaims are the RFC 9068 §2.2 claims beyond the registered ones.
type accessClaims struct {
	ClientID string          `json:"client_id"`
	Gty      string          `json:"gty"`   // "client_credentials": no user (see Principal.Client)
	Scope    json.RawMessage `json:"scope"` // RFC 8693 §4.2: a space-separated string
	Scp      []string        `json:"scp"`   // the array some providers send instead
}

func (v *jwtVerifier) verify(ctx context.Context, raw string) (*Principal, error) {
	if strings.Count(raw, ".") == 4 {
		return nil, fmt.Errorf("%w: the token is encrypted (JWE); only the issuer can read it, so run this API with Mode %q", ErrInvalidToken, ModeIntrospect)
	}
	ks, md, err := v.keySet(ctx)
	if err != nil {
		return nil, err
	}
	// ParseSigned refuses every alg outside the list: "none", and the HMAC
	// algs that would turn a published public key into a shared secret.
	tok, err := jwt.ParseSigned(raw, allowedAlgs(md))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if len(tok.Headers) != 1 {
		return nil, fmt.Errorf("%w: want exactly one signature", ErrInvalidToken)
	}
	h := tok.Headers[0]
	typ, _ := h.ExtraHeaders[jose.HeaderType].(string)
	if !isAccessTokenTyp(typ) {
		// RFC 9068 §4: typ distinguishes an access token from an ID token
		// signed by the same keys (token confusion, RFC 8725 §3.11).
		return nil, fmt.Errorf("%w: header typ %q, want \"at+jwt\"", ErrInvalidToken, typ)
	}
	keys, err := ks.verificationKeys(ctx, h.KeyID, h.Algorithm)
	if err != nil {
		return nil, err
	}
	var std jwt.Claims
	var extra accessClaims
	verified := false
	for _, key := range keys {
		if err := tok.Claims(key.Key, &std, &extra); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, fmt.Errorf("%w: signature does not verify with the issuer's key %q", ErrInvalidToken, h.KeyID)
	}
	now := v.cfg.Now()
	err = std.ValidateWithLeeway(jwt.Expected{
		Issuer:      v.cfg.Issuer,
		AnyAudience: jwt.Audience{v.cfg.Audience},
		Time:        now,
	}, v.cfg.Leeway)
	switch {
	case errors.Is(err, jwt.ErrExpired):
		return nil, fmt.Errorf("%w: exp %s is past", ErrExpired, std.Expiry.Time().UTC().Format(time.RFC3339))
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	case std.Expiry == nil:
		return nil, fmt.Errorf("%w: no exp claim (RFC 9068 §2.2 requires it)", ErrInvalidToken)
	case std.Subject == "":
		return nil, fmt.Errorf("%w: no sub claim (RFC 9068 §2.2 requires it)", ErrInvalidToken)
	}
	scopes, err := parseScopes(extra.Scope, extra.Scp)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	p := &Principal{
		Subject:   std.Subject,
		ClientID:  extra.ClientID,
		Issuer:    std.Issuer,
		Audience:  []string(std.Audience),
		Scopes:    scopes,
		JTI:       std.ID,
		ExpiresAt: std.Expiry.Time(),
		Format:    FormatJWT,
		TypHeader: typ,
		Alg:       h.Algorithm,
		Client:    clientGrant(extra.Gty),
	}
	if std.IssuedAt != nil {
		p.IssuedAt = std.IssuedAt.Time()
	}
	return p, nil
}

// isAccessTokenTyp accepts "at+jwt" and "application/at+jwt", in any case
// (RFC 7515 §4.1.9: the "application/" prefix may be omitted; media types
// compare case-insensitively).
func isAccessTokenTyp(typ string) bool {
	t := strings.ToLower(typ)
	t = strings.TrimPrefix(t, "application/")
	return t == "at+jwt"
}

// parseScopes reads scope as a space-separated string (RFC 8693 §4.2) or,
// tolerated, a JSON array; scp as a fallback.
func parseScopes(scope json.RawMessage, scp []string) ([]string, error) {
	if len(scope) == 0 || string(scope) == "null" {
		return dedupe(scp), nil
	}
	var s string
	if err := json.Unmarshal(scope, &s); err == nil {
		return dedupe(strings.Fields(s)), nil
	}
	var list []string
	if err := json.Unmarshal(scope, &list); err == nil {
		return dedupe(list), nil
	}
	return nil, errors.New("scope claim is neither a string nor a list of strings")
}

func dedupe(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// introspector asks the issuer about each token (RFC 7662) and caches
// positive answers briefly.
type introspector struct {
	cfg   *Config
	disco *discoverer

	mu    sync.Mutex
	cache map[[sha256.Size]byte]cached
}

type cached struct {
	p     *Principal
	until time.Time
}

// maxCacheEntries bounds the introspection cache.
const maxCacheEntries = 10000

var _ verifier = (*introspector)(nil)

func (in *introspector) ready(ctx context.Context) error {
	md, err := in.disco.get(ctx)
	if err != nil {
		return err
	}
	if md.IntrospectionEndpoint == "" {
		return fmt.Errorf("%w: the discovery document has no introspection_endpoint", ErrUnavailable)
	}
	return nil
}

// introspection is the RFC 7662 §2.2 response.
type introspection struct {
	Active    bool            `json:"active"`
	Scope     string          `json:"scope"`
	ClientID  string          `json:"client_id"`
	Username  string          `json:"username"`
	TokenType string          `json:"token_type"`
	Exp       *float64        `json:"exp"`
	Iat       *float64        `json:"iat"`
	Nbf       *float64        `json:"nbf"`
	Sub       string          `json:"sub"`
	Aud       json.RawMessage `json:"aud"` // a string or an array of strings
	Iss       string          `json:"iss"`
	JTI       string          `json:"jti"`
	Gty       string          `json:"gty"` // bffgate's issuer: "client_credentials" for a client's own token
}

func (in *introspector) verify(ctx context.Context, raw string) (*Principal, error) {
	key := sha256.Sum256([]byte(raw))
	now := in.cfg.Now()
	if in.cfg.CacheTTL > 0 {
		in.mu.Lock()
		c, ok := in.cache[key]
		in.mu.Unlock()
		if ok && now.Before(c.until) {
			return c.p, nil
		}
	}
	md, err := in.disco.get(ctx)
	if err != nil {
		return nil, err
	}
	if md.IntrospectionEndpoint == "" {
		return nil, fmt.Errorf("%w: the discovery document has no introspection_endpoint", ErrUnavailable)
	}
	resp, err := in.post(ctx, md, raw)
	if err != nil {
		return nil, err
	}
	p, err := in.principal(resp, raw, now)
	if err != nil {
		return nil, err
	}
	if in.cfg.CacheTTL > 0 {
		until := now.Add(in.cfg.CacheTTL)
		if !p.ExpiresAt.IsZero() && p.ExpiresAt.Before(until) {
			until = p.ExpiresAt
		}
		in.store(key, cached{p: p, until: until}, now)
	}
	return p, nil
}

func (in *introspector) store(key [sha256.Size]byte, c cached, now time.Time) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cache == nil {
		in.cache = make(map[[sha256.Size]byte]cached)
	}
	if len(in.cache) >= maxCacheEntries {
		for k, e := range in.cache {
			if !now.Before(e.until) {
				delete(in.cache, k)
			}
		}
		if len(in.cache) >= maxCacheEntries {
			clear(in.cache)
		}
	}
	in.cache[key] = c
}

// post sends the introspection request (RFC 7662 §2.1) with HTTP Basic
// client authentication (RFC 6749 §2.3.1: id and secret form-encoded
// first), or client_secret_post when that is all the issuer announces.
func (in *introspector) post(ctx context.Context, md *metadata, raw string) (*introspection, error) {
	form := url.Values{"token": {raw}, "token_type_hint": {"access_token"}}
	basic := len(md.IntrospectionAuthMethod) == 0 || slices.Contains(md.IntrospectionAuthMethod, "client_secret_basic")
	if !basic {
		form.Set("client_id", in.cfg.IntrospectionClientID)
		form.Set("client_secret", in.cfg.IntrospectionClientSecret)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, md.IntrospectionEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("%w: introspection: %v", ErrUnavailable, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if basic {
		req.SetBasicAuth(url.QueryEscape(in.cfg.IntrospectionClientID), url.QueryEscape(in.cfg.IntrospectionClientSecret))
	}
	resp, err := in.cfg.HTTPClient.Do(req)
	if err != nil {
		// The error text holds the URL, never the form: no token leaks.
		return nil, fmt.Errorf("%w: introspection: %v", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return nil, fmt.Errorf("%w: introspection: %v", ErrUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		// 401 here means the API's own credentials are wrong: an operator
		// problem, not the caller's token.
		return nil, fmt.Errorf("%w: introspection endpoint answered status %d (check IntrospectionClientID/Secret)", ErrUnavailable, resp.StatusCode)
	}
	if len(body) > maxDocument {
		return nil, fmt.Errorf("%w: introspection answer too large", ErrUnavailable)
	}
	var out introspection
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("%w: introspection answer is not JSON: %v", ErrUnavailable, err)
	}
	return &out, nil
}

// principal applies the resource server's own checks to an introspection
// answer: the issuer says whether the token is alive; whether it was meant
// for this API is ours to check (RFC 7662 §4).
func (in *introspector) principal(r *introspection, raw string, now time.Time) (*Principal, error) {
	if !r.Active {
		return nil, fmt.Errorf("%w: introspection says active=false (expired, revoked or unknown)", ErrInvalidToken)
	}
	if r.TokenType == "refresh_token" {
		return nil, fmt.Errorf("%w: a refresh token was sent as an access token", ErrInvalidToken)
	}
	if r.Iss != "" && r.Iss != in.cfg.Issuer {
		return nil, fmt.Errorf("%w: introspection iss %q, want %q", ErrInvalidToken, r.Iss, in.cfg.Issuer)
	}
	aud, err := parseAudience(r.Aud)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	// aud is optional in RFC 7662; when the issuer states it, it must name
	// this API.
	if len(aud) > 0 && !slices.Contains(aud, in.cfg.Audience) {
		return nil, fmt.Errorf("%w: aud %q does not contain %q", ErrInvalidToken, aud, in.cfg.Audience)
	}
	hdr := peekHeader(raw)
	p := &Principal{
		Subject:   r.Sub,
		ClientID:  r.ClientID,
		Issuer:    r.Iss,
		Audience:  aud,
		Scopes:    dedupe(strings.Fields(r.Scope)),
		JTI:       r.JTI,
		Format:    FormatIntrospected,
		TypHeader: hdr.Typ,
		Alg:       hdr.Alg,
		Enc:       hdr.Enc,
		Client:    clientGrant(r.Gty),
	}
	if r.Exp != nil {
		p.ExpiresAt = time.Unix(int64(*r.Exp), 0)
		if now.After(p.ExpiresAt.Add(in.cfg.Leeway)) {
			return nil, fmt.Errorf("%w: exp %s is past", ErrExpired, p.ExpiresAt.UTC().Format(time.RFC3339))
		}
	}
	if r.Nbf != nil && now.Add(in.cfg.Leeway).Before(time.Unix(int64(*r.Nbf), 0)) {
		return nil, fmt.Errorf("%w: nbf is in the future", ErrInvalidToken)
	}
	if r.Iat != nil {
		p.IssuedAt = time.Unix(int64(*r.Iat), 0)
	}
	if p.Subject == "" {
		return nil, fmt.Errorf("%w: introspection names no sub; this API keeps data per subject", ErrInvalidToken)
	}
	return p, nil
}

func parseAudience(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return []string{s}, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, errors.New("aud is neither a string nor a list of strings")
	}
	return list, nil
}

// joseHeader is the part of a JOSE header peekHeader reports.
type joseHeader struct {
	Typ string `json:"typ"`
	Alg string `json:"alg"`
	Enc string `json:"enc"`
}

// peekHeader reads the protected header of a compact JWS or JWE without
// verifying anything: for display only (an introspected token's format).
// A token that is not a JOSE object gives the zero header.
func peekHeader(raw string) joseHeader {
	head, _, ok := strings.Cut(raw, ".")
	if !ok || len(head) > 4096 {
		return joseHeader{}
	}
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return joseHeader{}
	}
	var h joseHeader
	if json.Unmarshal(b, &h) != nil || len(h.Typ) > 64 || len(h.Alg) > 64 || len(h.Enc) > 64 {
		return joseHeader{}
	}
	return h
}
