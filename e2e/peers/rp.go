package peers

import (
	"context"
	"encoding/json"
	"testing"
)

// RPOptions configure StartRP.
type RPOptions struct {
	Issuer       string
	ClientID     string
	ClientSecret string
	RedirectURI  string
	// AuthMethod at the token, introspection and revocation endpoints:
	// client_secret_basic (default), client_secret_post, client_secret_jwt,
	// private_key_jwt (with PrivateJWK) or none.
	AuthMethod string
	// PrivateJWK is the client's private key for private_key_jwt: a JWK
	// with its private part, alg and kid.
	PrivateJWK any
}

// RP is panva's openid-client configured for one client of one issuer.
// Discovery ran at start; Metadata holds its result.
type RP struct {
	Metadata map[string]any
	proc     *proc
}

// StartRP starts openid-client, runs discovery against opts.Issuer, and
// stops the process when the test ends. A discovery failure fails the test
// (use Discover to test one).
func StartRP(t testing.TB, opts RPOptions) *RP {
	t.Helper()
	arg, err := json.Marshal(map[string]any{
		"issuer":        opts.Issuer,
		"client_id":     opts.ClientID,
		"client_secret": opts.ClientSecret,
		"redirect_uri":  opts.RedirectURI,
		"auth_method":   opts.AuthMethod,
		"private_jwk":   opts.PrivateJWK,
	})
	if err != nil {
		t.Fatal(err)
	}
	p, line := startProc(t, "rp.mjs", string(arg))
	var ready struct {
		Metadata map[string]any `json:"metadata"`
	}
	if err := json.Unmarshal(line, &ready); err != nil {
		t.Fatalf("rp.mjs ready line %s: %v", line, err)
	}
	return &RP{Metadata: ready.Metadata, proc: p}
}

// Discover runs discovery again and returns the server metadata.
func (r *RP) Discover(ctx context.Context) (map[string]any, error) {
	var m map[string]any
	err := r.proc.call(ctx, "discover", nil, &m)
	return m, err
}

// AuthRequest is an authorization request openid-client built: the URL to
// open, and the values it will check at the callback.
type AuthRequest struct {
	URL          string `json:"url"`
	State        string `json:"state"`
	Nonce        string `json:"nonce"`
	CodeVerifier string `json:"code_verifier"`
}

// Authorize builds an authorization URL (code flow, PKCE S256, state,
// nonce). scope "" means "openid profile email"; params adds or overrides
// query parameters (for example prompt or login_hint).
func (r *RP) Authorize(ctx context.Context, scope string, params map[string]string) (AuthRequest, error) {
	var a AuthRequest
	req := map[string]any{"params": params}
	if scope != "" {
		req["scope"] = scope
	}
	err := r.proc.call(ctx, "authorize", req, &a)
	return a, err
}

// Tokens is a token endpoint response; IDTokenClaims are the claims of the
// ID token, which openid-client validated (signature through jwks_uri, iss,
// aud, exp, iat, nonce, azp).
type Tokens struct {
	AccessToken   string         `json:"access_token"`
	TokenType     string         `json:"token_type"`
	ExpiresIn     int64          `json:"expires_in"`
	RefreshToken  string         `json:"refresh_token"`
	IDToken       string         `json:"id_token"`
	Scope         string         `json:"scope"`
	IDTokenClaims map[string]any `json:"id_token_claims"`
}

// Callback exchanges the code in callbackURL (the redirect the provider sent
// the browser to) for tokens, checking state, iss, PKCE and the ID token.
func (r *RP) Callback(ctx context.Context, callbackURL, state string) (Tokens, error) {
	var tok Tokens
	err := r.proc.call(ctx, "callback", map[string]any{"url": callbackURL, "state": state}, &tok)
	return tok, err
}

// Refresh runs the refresh_token grant; with an ID token in the answer it is
// validated too.
func (r *RP) Refresh(ctx context.Context, refreshToken string) (Tokens, error) {
	var tok Tokens
	err := r.proc.call(ctx, "refresh", map[string]any{"refresh_token": refreshToken}, &tok)
	return tok, err
}

// UserInfo calls the userinfo endpoint with the access token; a non-empty
// sub must match the response's sub (OIDC Core §5.3.2).
func (r *RP) UserInfo(ctx context.Context, accessToken, sub string) (map[string]any, error) {
	var m map[string]any
	req := map[string]any{"access_token": accessToken}
	if sub != "" {
		req["sub"] = sub
	}
	err := r.proc.call(ctx, "userinfo", req, &m)
	return m, err
}

// ClientCredentials runs the client_credentials grant; scope may be "".
func (r *RP) ClientCredentials(ctx context.Context, scope string) (Tokens, error) {
	var tok Tokens
	err := r.proc.call(ctx, "client_credentials", map[string]any{"scope": scope}, &tok)
	return tok, err
}

// Introspect calls the introspection endpoint (RFC 7662); hint may be "".
func (r *RP) Introspect(ctx context.Context, token, hint string) (map[string]any, error) {
	var m map[string]any
	err := r.proc.call(ctx, "introspect", map[string]any{"token": token, "token_type_hint": hint}, &m)
	return m, err
}

// Revoke calls the revocation endpoint (RFC 7009); hint may be "".
func (r *RP) Revoke(ctx context.Context, token, hint string) error {
	return r.proc.call(ctx, "revoke", map[string]any{"token": token, "token_type_hint": hint}, nil)
}

// EndSessionURL builds an RP-initiated logout URL (OpenID Connect
// RP-Initiated Logout 1.0); empty arguments are left out.
func (r *RP) EndSessionURL(ctx context.Context, idTokenHint, postLogoutRedirectURI, state string) (string, error) {
	var res struct {
		URL string `json:"url"`
	}
	err := r.proc.call(ctx, "end_session_url", map[string]any{
		"id_token_hint":            idTokenHint,
		"post_logout_redirect_uri": postLogoutRedirectURI,
		"state":                    state,
	}, &res)
	return res.URL, err
}

// Grant sends a grant of grantType to the token endpoint with
// openid-client's genericGrantRequest (token exchange, RFC 8693; the
// jwt-bearer grant, RFC 7523) and returns the token response. A param
// given as a []string is sent once per value (audience, resource). An
// OAuth error response is a *PeerError with OAuthError and
// ErrorDescription set.
func (r *RP) Grant(ctx context.Context, grantType string, params map[string]any) (map[string]any, error) {
	var m map[string]any
	err := r.proc.call(ctx, "grant", map[string]any{"grant_type": grantType, "params": params}, &m)
	return m, err
}
