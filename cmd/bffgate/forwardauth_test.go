package main

import (
	"reflect"
	"strings"
	"testing"
)

// With the embedded issuer the gateway asks for the groups and roles
// scopes by default (the claims allow rules and forward-auth rules read),
// with or without a configuration file; an external provider gets bff's
// default scopes, and scopes written in the file are kept as written.
func TestDefaultScopes(t *testing.T) {
	t.Parallel()
	embedded := []string{"openid", "profile", "email", "offline_access", "groups", "roles"}
	plain := []string{"openid", "profile", "email", "offline_access"}
	for _, tc := range []struct {
		name, file string
		want       []string
	}{
		{"zero-config", "", embedded},
		{"file, embedded issuer", "gateway:\n  trusted_proxies: [127.0.0.1]\n", embedded},
		{"external provider", "issuer:\n  enabled: false\ngateway:\n  provider:\n    issuer_url: https://id.example.com\n    client_id: app\n", plain},
		{"written scopes", "gateway:\n  provider:\n    scopes: [openid, email]\n", []string{"openid", "email"}},
	} {
		path := ""
		if tc.file != "" {
			path = writeFile(t, tc.file)
		}
		cfg, err := loadConfig(path, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := cfg.Gateway.Provider.Scopes; !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: scopes %v, want %v", tc.name, got, tc.want)
		}
	}
}

// Forward-auth rules that cannot work as meant are start-up warnings: no
// trusted proxy (every decision denies), cookie sessions (renewed cookies
// do not reach the browser through the proxy).
func TestForwardAuthWarnings(t *testing.T) {
	t.Parallel()
	rules := "gateway:\n  forward_auth:\n    rules: [{prefix: /}]\n"
	for _, tc := range []struct {
		name, file string
		want       []string
	}{
		{"no trusted proxy", rules, []string{"trusted_proxies is empty"}},
		{"cookie sessions", rules + "  trusted_proxies: [127.0.0.1]\n  session: {store: cookie}\n", []string{"session.store: cookie"}},
		{"fine", rules + "  trusted_proxies: [127.0.0.1]\n", nil},
		{"no rules", "gateway:\n  session: {store: cookie}\n", nil},
	} {
		cfg, err := loadConfig(writeFile(t, tc.file), nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got := forwardAuthWarnings(cfg)
		if len(got) != len(tc.want) {
			t.Errorf("%s: warnings %q, want %d", tc.name, got, len(tc.want))
			continue
		}
		for i, w := range tc.want {
			if !strings.Contains(got[i], w) {
				t.Errorf("%s: warning %q lacks %q", tc.name, got[i], w)
			}
		}
	}
}
