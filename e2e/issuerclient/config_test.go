package issuerclient

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestConfigWithDefaults(t *testing.T) {
	t.Parallel()
	const secret = "config-test-secret-0123456789"
	valid := Config{ClientID: "c", ClientSecret: secret, RedirectURI: "https://client.e2e.test/callback"}
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string // the field the error names; "" for none
		user    string // the user it signs in as, when valid
	}{
		{name: "demo user by default", edit: func(*Config) {}, user: DemoUser},
		{name: "own user", edit: func(c *Config) { c.Username, c.Password = "alice", "pw" }, user: "alice"},
		{name: "no client id", edit: func(c *Config) { c.ClientID = "" }, wantErr: "Config.ClientID"},
		{name: "no secret", edit: func(c *Config) { c.ClientSecret = "" }, wantErr: "Config.ClientSecret"},
		{name: "no redirect", edit: func(c *Config) { c.RedirectURI = "" }, wantErr: "Config.RedirectURI"},
		{name: "relative redirect", edit: func(c *Config) { c.RedirectURI = "/callback" }, wantErr: "Config.RedirectURI"},
		{name: "redirect with query", edit: func(c *Config) { c.RedirectURI += "?a=1" }, wantErr: "Config.RedirectURI"},
		{name: "username without password", edit: func(c *Config) { c.Username = "alice" }, wantErr: "Config.Username"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := valid
			tc.edit(&cfg)
			got, err := cfg.withDefaults()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got.Username != tc.user || got.Password == "" {
					t.Fatalf("signs in as %q (password set %t), want %q", got.Username, got.Password != "", tc.user)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want one naming %s", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("the error quotes the client secret: %v", err)
			}
		})
	}
}

func TestConfigEnv(t *testing.T) {
	t.Parallel()
	cfg := Config{ClientID: "e2e", ClientSecret: "s3cret", RedirectURI: "https://client.e2e.test/callback"}
	name, value, ok := strings.Cut(cfg.Env(), "=")
	if !ok || name != "BFFGATE_ISSUER_CLIENTS" {
		t.Fatalf("Env() = %q, want BFFGATE_ISSUER_CLIENTS=...", cfg.Env())
	}
	var clients []struct {
		ID           string   `json:"id"`
		Secret       string   `json:"secret"`
		RedirectURIs []string `json:"redirect_uris"`
		GrantTypes   []string `json:"grant_types"`
	}
	if err := json.Unmarshal([]byte(value), &clients); err != nil {
		t.Fatal(err)
	}
	if len(clients) != 1 {
		t.Fatalf("%d clients, want 1", len(clients))
	}
	c := clients[0]
	if c.ID != "e2e" || c.Secret != "s3cret" || len(c.RedirectURIs) != 1 || c.RedirectURIs[0] != cfg.RedirectURI ||
		strings.Join(c.GrantTypes, ",") != "authorization_code,refresh_token" {
		t.Fatalf("registered client = %+v", c)
	}
}
