package issuer_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/bffgate/bffgate/issuer"
	"github.com/bffgate/bffgate/issuer/token"
)

func sealedRS256(c *issuer.Config) {
	c.TokenAlg, c.IDTokenAlg = "RS256", "RS256"
	c.RefreshTokenFormat = token.RefreshSealed
}

// TestSealedRefreshTokens runs the refresh-token lifecycle with
// issuer.tokens.refresh_format sealed over real HTTP: the refresh token is
// a JWE the client cannot read, the access and ID tokens stay RS256 JWS;
// rotation, reuse detection, revocation and introspection hold as for
// signed refresh tokens.
func TestSealedRefreshTokens(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{cfg: sealedRS256})

	t.Run("formats", func(t *testing.T) {
		_, _, tk := e.loginTokens(webID)
		if n := strings.Count(tk.refresh, "."); n != 4 {
			t.Fatalf("the refresh token has %d parts, want 5 (a sealed JWE)", n+1)
		}
		for name, raw := range map[string]string{"access": tk.access, "id": tk.id} {
			if strings.Count(raw, ".") != 2 {
				t.Errorf("the %s token is not a JWS", name)
			}
		}
		if got := payload(t, tk.access)["sub"]; got != "user-alice" {
			t.Errorf("access token sub = %v", got)
		}
		if v, ok := e.metric("bffgate_issuer_tokens_minted_total", "grant_type", "authorization_code", "kind", "refresh", "format", "sealed"); !ok || v < 1 {
			t.Errorf("minted sealed refresh tokens = %v (found %v), want >= 1", v, ok)
		}
	})
	t.Run("rotation", func(t *testing.T) {
		_, _, tk := e.loginTokens(webID)
		rt := tk.refresh
		for i := range 3 {
			r := e.refresh(webBasic, rt)
			// The client cannot read exp from a sealed token: the
			// response says how long it lives (Keycloak's parameter).
			if got, _ := r.body["refresh_expires_in"].(float64); got != issuer.DefaultRefreshTokenTTL.Seconds() {
				t.Errorf("refresh %d: refresh_expires_in = %v, want %v", i, r.body["refresh_expires_in"], issuer.DefaultRefreshTokenTTL.Seconds())
			}
			if r.status != http.StatusOK || r.str("refresh_token") == "" || r.str("refresh_token") == rt {
				t.Fatalf("refresh %d: %d %s, want a new refresh token", i, r.status, r.raw)
			}
			if strings.Count(r.str("refresh_token"), ".") != 4 {
				t.Fatalf("refresh %d returned an unsealed refresh token", i)
			}
			wantInactive(t, e.introspect(rt))
			rt = r.str("refresh_token")
			wantActive(t, e.introspect(rt))
			wantActive(t, e.introspect(r.str("access_token")))
		}
	})
	t.Run("reuse revokes the grant", func(t *testing.T) {
		_, _, tk := e.loginTokens(webID)
		r := e.refresh(webBasic, tk.refresh)
		if r.status != http.StatusOK {
			t.Fatalf("refresh: %d %s", r.status, r.raw)
		}
		wantGrantError(t, e.refresh(webBasic, tk.refresh), "rotated")
		wantError(t, e.refresh(webBasic, r.str("refresh_token")), http.StatusBadRequest, "invalid_grant")
		wantInactive(t, e.introspect(r.str("access_token")))
	})
	t.Run("revocation", func(t *testing.T) {
		_, _, tk := e.loginTokens(webID)
		if r := e.revoke(webBasic, tk.refresh, "access_token"); r.status != http.StatusOK {
			t.Fatalf("revoke: %d %s", r.status, r.raw)
		}
		wantGrantError(t, e.refresh(webBasic, tk.refresh), "revoked")
		wantInactive(t, e.introspect(tk.refresh))
		wantInactive(t, e.introspect(tk.access))
	})
	t.Run("introspection", func(t *testing.T) {
		_, _, tk := e.loginTokens(webID)
		for _, hint := range []string{"", "refresh_token", "access_token"} {
			r := e.post("/introspect", webBasic, url.Values{"token": {tk.refresh}, "token_type_hint": {hint}})
			wantActive(t, r)
			for k, want := range map[string]any{"client_id": webID, "sub": "user-alice", "iss": e.url} {
				if r.body[k] != want {
					t.Errorf("hint %q: %s = %v, want %v", hint, k, r.body[k], want)
				}
			}
			if r.str("token_type") == "Bearer" || r.str("jti") == "" {
				t.Errorf("hint %q: a sealed refresh token introspects as %s", hint, r.raw)
			}
		}
		// Another client learns nothing of it.
		wantInactive(t, e.post("/introspect", otherBasic, url.Values{"token": {tk.refresh}}))
	})
	t.Run("never an access token", func(t *testing.T) {
		_, _, tk := e.loginTokens(webID)
		wantError(t, e.userinfo(tk.refresh), http.StatusUnauthorized, "invalid_token")
		// Nor is an access token a refresh token.
		wantError(t, e.refresh(webBasic, tk.access), http.StatusBadRequest, "invalid_grant")
	})
	t.Run("tampered", func(t *testing.T) {
		_, _, tk := e.loginTokens(webID)
		parts := strings.Split(tk.refresh, ".")
		c := []byte(parts[3])
		if c[5] == 'A' {
			c[5] = 'B'
		} else {
			c[5] = 'A'
		}
		parts[3] = string(c)
		forged := strings.Join(parts, ".")
		wantError(t, e.refresh(webBasic, forged), http.StatusBadRequest, "invalid_grant")
		wantInactive(t, e.introspect(forged))
		// The original still works: the forgery changed nothing.
		if r := e.refresh(webBasic, tk.refresh); r.status != http.StatusOK {
			t.Errorf("the untampered token after a forgery: %d %s", r.status, r.raw)
		}
	})
}

// TestRefreshFormatSwitch restarts the issuer on one data file from
// signed to sealed refresh tokens and back: refresh tokens issued before
// each switch still refresh, introspect and revoke.
func TestRefreshFormatSwitch(t *testing.T) {
	t.Parallel()
	signed := func(c *issuer.Config) { c.TokenAlg, c.IDTokenAlg = "RS256", "RS256" }
	a := start(t, envOptions{cfg: signed})
	_, _, tk := a.loginTokens(webID)
	_, _, tk2 := a.loginTokens(webID)
	if strings.Count(tk.refresh, ".") != 2 {
		t.Fatal("the default refresh token is not signed")
	}
	url, path, clock := a.url, a.path, a.clock
	a.Stop()

	b := start(t, envOptions{cfg: sealedRS256, issuerURL: url, path: path, clock: clock})
	wantActive(t, b.introspect(tk.refresh))
	r := b.refresh(webBasic, tk.refresh)
	if r.status != http.StatusOK {
		t.Fatalf("a signed refresh token after the switch to sealed: %d %s", r.status, r.raw)
	}
	sealed := r.str("refresh_token")
	if strings.Count(sealed, ".") != 4 {
		t.Fatal("the rotated refresh token is not sealed after the switch")
	}
	if rv := b.revoke(webBasic, tk2.refresh, "refresh_token"); rv.status != http.StatusOK {
		t.Fatalf("revoke: %d %s", rv.status, rv.raw)
	}
	wantGrantError(t, b.refresh(webBasic, tk2.refresh), "revoked")
	b.Stop()

	c := start(t, envOptions{cfg: signed, issuerURL: url, path: path, clock: clock})
	wantActive(t, c.introspect(sealed))
	r = c.refresh(webBasic, sealed)
	if r.status != http.StatusOK {
		t.Fatalf("a sealed refresh token after the switch back to signed: %d %s", r.status, r.raw)
	}
	if strings.Count(r.str("refresh_token"), ".") != 2 {
		t.Error("the rotated refresh token is not signed after the switch back")
	}
}

func TestSealedRefreshConfig(t *testing.T) {
	t.Parallel()
	cfg := baseConfig()
	cfg.Issuer = "http://127.0.0.1:1"
	cfg.TokenFormat = token.FormatEncrypted
	cfg.RefreshTokenFormat = token.RefreshSealed
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "refresh_token_format") {
		t.Errorf("sealed with the encrypted format: %v; want an error naming refresh_token_format", err)
	}
	cfg.TokenFormat, cfg.RefreshTokenFormat = token.FormatSigned, "opaque"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "refresh_token_format") {
		t.Errorf("an unknown refresh format: %v; want an error naming refresh_token_format", err)
	}
}
