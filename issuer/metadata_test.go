package issuer_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/bffgate/bffgate/issuer"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name, after replacing the issuer URL
// (a random port) with ISSUER; -update rewrites the file.
func golden(t *testing.T, name string, got []byte, issuerURL string) {
	t.Helper()
	var v any
	if err := json.Unmarshal(got, &v); err != nil {
		t.Fatalf("%s: not JSON: %v\n%s", name, err, got)
	}
	pretty, _ := json.MarshalIndent(v, "", "  ")
	pretty = bytes.ReplaceAll(pretty, []byte(issuerURL), []byte("ISSUER"))
	pretty = append(pretty, '\n')
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, pretty, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to write it)", err, t.Name())
	}
	if !bytes.Equal(want, pretty) {
		t.Errorf("%s differs from the golden file:\n--- got\n%s\n--- want\n%s", name, pretty, want)
	}
}

// TestAuthorizationServerMetadata: RFC 8414 metadata is the OpenID
// configuration plus the OAuth members, at the well-known URL, and has
// the wire form of the golden file.
func TestAuthorizationServerMetadata(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{})
	r := e.request(http.MethodGet, "/.well-known/oauth-authorization-server", nil, nil)
	if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Fatalf("metadata: %d %s", r.status, r.raw)
	}
	if got := r.header.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("Access-Control-Allow-Origin = %q; browser-based MCP clients read the metadata cross-origin", got)
	}
	golden(t, "oauth-authorization-server.json", []byte(r.raw), e.url)

	oidcDoc := e.request(http.MethodGet, "/.well-known/openid-configuration", nil, nil)
	for k, v := range oidcDoc.body {
		got, _ := json.Marshal(r.body[k])
		want, _ := json.Marshal(v)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: OAuth metadata %s, OpenID configuration %s", k, got, want)
		}
	}
	if r.body["issuer"] != e.url {
		t.Errorf("issuer = %v, want %s (RFC 8414 §3.3: identical to the URL the metadata was derived from)", r.body["issuer"], e.url)
	}
	if m, _ := r.body["code_challenge_methods_supported"].([]any); len(m) != 1 || m[0] != "S256" {
		t.Errorf("code_challenge_methods_supported = %v; the MCP spec has clients refuse a server without it", m)
	}
	if r.body["authorization_response_iss_parameter_supported"] != true {
		t.Error("authorization_response_iss_parameter_supported is not true")
	}
}

// TestAuthorizationServerMetadataPathInsertion: with an issuer URL that
// has a path, the metadata is at the host's root with the path appended to
// the well-known suffix (RFC 8414 §3.1), and also at the appended form; the
// OpenID configuration is also served by insertion, the MCP client's
// second try.
func TestAuthorizationServerMetadataPathInsertion(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{issuerURL: "http://idp.example.test:8000/tenant"})
	for _, path := range []string{
		"http://idp.example.test:8000/.well-known/oauth-authorization-server/tenant",
		"http://idp.example.test:8000/tenant/.well-known/oauth-authorization-server",
		"http://idp.example.test:8000/.well-known/openid-configuration/tenant",
		"http://idp.example.test:8000/tenant/.well-known/openid-configuration",
	} {
		t.Run(path, func(t *testing.T) {
			resp, err := e.client.Get(path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var m map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, %v", resp.StatusCode, err)
			}
			if m["issuer"] != "http://idp.example.test:8000/tenant" || m["token_endpoint"] != "http://idp.example.test:8000/tenant/token" {
				t.Errorf("issuer %v, token_endpoint %v", m["issuer"], m["token_endpoint"])
			}
		})
	}
	// Another tenant's path is not this issuer's.
	resp, err := e.client.Get("http://idp.example.test:8000/.well-known/oauth-authorization-server/other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("metadata of another path: %d, want 404", resp.StatusCode)
	}
}

// TestLoopbackRedirectAnyPort: a native client's loopback redirect URI
// matches on any port (RFC 8252 §7.3); host, scheme, path and query stay
// exact, and nothing else is loose.
func TestLoopbackRedirectAnyPort(t *testing.T) {
	t.Parallel()
	const native = "native"
	e := start(t, envOptions{cfg: func(c *issuer.Config) {
		c.Clients = append(c.Clients, issuer.Client{ID: native, RedirectURIs: []string{
			"http://127.0.0.1/callback", "http://[::1]:8080/cb", "http://localhost:33418/cb?x=1", "https://app.example.test/cb",
		}})
	}})
	p := e.provider()
	for _, tc := range []struct {
		redirect string
		ok       bool
	}{
		{"http://127.0.0.1:49152/callback", true},
		{"http://127.0.0.1/callback", true},
		{"http://127.0.0.1:1/callback", true},
		{"http://[::1]:65535/cb", true},
		{"http://[::1]/cb", true},
		{"http://localhost:9/cb?x=1", true},
		{"http://127.0.0.1:49152/callback/", false},
		{"http://127.0.0.1:49152/Callback", false},
		{"http://127.0.0.1:49152/callback?x=1", false},
		{"http://localhost:49152/callback", false}, // registered as 127.0.0.1
		{"http://127.0.0.2:49152/callback", false},
		{"https://127.0.0.1:49152/callback", false},
		{"http://127.0.0.1:0/callback", false},
		{"http://127.0.0.1:65536/callback", false},
		{"http://127.0.0.1:+80/callback", false},
		{"http://127.0.0.1:080/callback", false},
		{"http://user@127.0.0.1:80/callback", false},
		{"http://localhost:9/cb?x=2", false},
		{"https://app.example.test:8443/cb", false}, // https is exact
		{"http://[::1]:8080/cb#f", false},
	} {
		t.Run(tc.redirect, func(t *testing.T) {
			conf := &oauth2.Config{ClientID: native, Endpoint: p.Endpoint(), Scopes: []string{"openid"}, RedirectURL: tc.redirect}
			conf.Endpoint.AuthStyle = oauth2.AuthStyleInParams
			f := newFlow(conf)
			pg := e.browser().authorize(f.authURL(), aliceUser, alicePassword)
			switch {
			case tc.ok && (pg.location == nil || pg.location.Query().Get("code") == ""):
				t.Fatalf("refused: %d %s", pg.status, clipText(pg.body, 400))
			case tc.ok && pg.location.String()[:len(tc.redirect)] != tc.redirect:
				t.Errorf("redirected to %s", pg.location)
			case !tc.ok && (pg.location != nil || pg.status != http.StatusBadRequest):
				t.Fatalf("accepted: %d %v", pg.status, pg.location)
			}
			if tc.ok {
				// The code is redeemed with the redirect URI of the request.
				e.exchange(f, pg.location.Query().Get("code"))
			}
		})
	}
}
