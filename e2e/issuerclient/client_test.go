package issuerclient

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/bffgate/bffgate/e2e/stack"
)

var testClient = Config{
	ClientID:     "e2e-issuerclient",
	ClientSecret: "e2e-issuerclient-secret-0123456789abcdef",
	RedirectURI:  "https://client.e2e.test/callback",
}

// TestClientAgainstIssuer runs every call of the client against the real
// bffgate binary's issuer: a grant through the login form, one through the
// SSO session, refresh with rotation, reuse detection, revocation,
// introspection, and the error answers the tests rely on.
func TestClientAgainstIssuer(t *testing.T) {
	s := stack.Start(t, stack.Options{NoGateway: true, Env: []string{testClient.Env(), "BFFGATE_LOG_ACCESS=false"}})
	ctx := context.Background()
	c := New(t, s.IssuerURL, testClient)
	if c.IssuerURL() != s.IssuerURL {
		t.Fatalf("IssuerURL() = %q, want %q", c.IssuerURL(), s.IssuerURL)
	}

	first := c.MustGrant() // the login form
	if first.IDToken == "" {
		t.Errorf("a grant with scope openid returned no ID token")
	}
	if c.jar.Header() == "" {
		t.Fatalf("the login set no cookie: the next grant cannot ride the SSO session")
	}
	second, err := c.Grant(ctx) // the SSO session
	if err != nil {
		t.Fatalf("second grant (SSO session): %v", err)
	}
	if second.AccessToken == first.AccessToken || second.RefreshToken == first.RefreshToken {
		t.Fatalf("the second grant returned the first grant's tokens")
	}
	for _, tok := range []struct{ what, token, hint string }{
		{"access token", first.AccessToken, "access_token"},
		{"refresh token", first.RefreshToken, "refresh_token"},
	} {
		if !c.Introspect(ctx, tok.token, tok.hint) {
			t.Errorf("a fresh %s introspects inactive", tok.what)
		}
	}

	next, r, err := c.Refresh(ctx, first.RefreshToken)
	if err != nil || r.Status != http.StatusOK || r.Code != "" {
		t.Fatalf("refresh: %s (%v), want 200", r, err)
	}
	if next.RefreshToken == first.RefreshToken {
		t.Fatalf("refresh did not rotate the refresh token")
	}
	if s := r.String(); strings.Contains(s, next.AccessToken) || strings.Contains(s, next.RefreshToken) || !strings.Contains(s, "access_token") {
		t.Errorf("Reply.String of a token response = %q: want its member names, never a token", s)
	}
	// Reuse of the rotated-away token: refused, and the grant is revoked
	// (RFC 9700 §4.14.2).
	if _, r, err := c.Refresh(ctx, first.RefreshToken); err != nil || r.Status != http.StatusBadRequest || r.Code != "invalid_grant" {
		t.Fatalf("refresh with a rotated-away token: %s (%v), want 400 invalid_grant", r, err)
	}
	if c.Introspect(ctx, next.RefreshToken, "refresh_token") {
		t.Errorf("reuse of a rotated-away refresh token left its grant's new refresh token active")
	}

	if r, err := c.Revoke(ctx, second.AccessToken, "access_token"); err != nil || r.Status != http.StatusOK {
		t.Fatalf("revoke: %s (%v), want 200", r, err)
	}
	if c.Introspect(ctx, second.AccessToken, "access_token") {
		t.Errorf("a revoked access token introspects active")
	}

	t.Run("wrong secret", func(t *testing.T) {
		cfg := testClient
		cfg.ClientSecret = "not-the-secret"
		r, err := New(t, s.IssuerURL, cfg).Post(ctx, "/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}})
		if err != nil || r.Status != http.StatusUnauthorized || r.Code != "invalid_client" {
			t.Fatalf("token request with a wrong client secret: %s (%v), want 401 invalid_client", r, err)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		cfg := testClient
		cfg.Username, cfg.Password = DemoUser, "not-the-password"
		_, err := New(t, s.IssuerURL, cfg).Grant(ctx)
		if err == nil || !strings.Contains(err.Error(), "did not redirect to the client") {
			t.Fatalf("grant with a wrong password: %v, want an error that the flow stopped at the issuer", err)
		}
		if strings.Contains(err.Error(), "csrf") || strings.Contains(err.Error(), "value=") {
			t.Errorf("the error quotes the login form's fields: %v", err)
		}
		t.Logf("error: %v", err)
	})
	t.Run("unregistered redirect", func(t *testing.T) {
		cfg := testClient
		cfg.RedirectURI = "https://elsewhere.e2e.test/callback"
		_, err := New(t, s.IssuerURL, cfg).Grant(ctx)
		if err == nil {
			t.Fatalf("grant with an unregistered redirect URI succeeded")
		}
		t.Logf("error: %v", err)
	})
}

// TestPostNotJSON checks that an error answer without the RFC 6749 §5.2
// JSON body (what a proxy in front of a dead issuer sends) comes back as
// a Reply with ErrNotJSON, not as a transport error.
func TestPostNotJSON(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, secret, ok := r.BasicAuth()
		if !ok || id != testClient.ClientID || secret != testClient.ClientSecret {
			http.Error(w, "no client authentication", http.StatusTeapot)
			return
		}
		http.Error(w, "bad gateway", http.StatusBadGateway)
	}))
	t.Cleanup(srv.Close)
	r, err := New(t, srv.URL, testClient).Post(context.Background(), "/introspect", url.Values{"token": {"x"}})
	if !errors.Is(err, ErrNotJSON) {
		t.Fatalf("Post error = %v, want ErrNotJSON", err)
	}
	if r.Status != http.StatusBadGateway || r.Code != "" || !strings.Contains(string(r.Body), "bad gateway") {
		t.Fatalf("reply = %s code %q, want the 502 with its body and no code", r, r.Code)
	}
}

// TestLoginThrottleFromConfig runs the binary with
// issuer.login_throttle.max_failures set through the environment: the
// third wrong password locks the user, and then the right one is refused
// too, with 429 and the wait in the page.
func TestLoginThrottleFromConfig(t *testing.T) {
	s := stack.Start(t, stack.Options{NoGateway: true, Env: []string{testClient.Env(), "BFFGATE_LOG_ACCESS=false",
		"BFFGATE_ISSUER_LOGIN_THROTTLE_MAX_FAILURES=2", "BFFGATE_ISSUER_LOGIN_THROTTLE_LOCKOUT=5m", "BFFGATE_ISSUER_LOGIN_THROTTLE_MAX_LOCKOUT=10m"}})
	ctx := context.Background()
	wrong := testClient
	wrong.Username, wrong.Password = DemoUser, "not-the-password"
	_, err := New(t, s.IssuerURL, wrong).Grant(ctx)
	if err == nil || !strings.Contains(err.Error(), "Wrong username or password") || strings.Contains(err.Error(), "HTTP 429") {
		t.Fatalf("first wrong password: %v, want the login form again with the error, not yet 429", err)
	}
	_, err = New(t, s.IssuerURL, wrong).Grant(ctx)
	if err == nil || !strings.Contains(err.Error(), "HTTP 429") || !strings.Contains(err.Error(), "try again in 5 minutes") {
		t.Fatalf("second wrong password with max_failures 2: %v, want HTTP 429 and the 5-minute wait", err)
	}
	_, err = New(t, s.IssuerURL, testClient).Grant(ctx)
	if err == nil || !strings.Contains(err.Error(), "HTTP 429") {
		t.Fatalf("the right password while locked: %v, want HTTP 429", err)
	}
	if strings.Contains(s.Logs(), wrong.Password) {
		t.Errorf("the issuer logged a password")
	}
}
