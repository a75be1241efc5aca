package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// Configuration errors speak YAML: the key path, the file and line (or
// the variable), and what is allowed; never a Go type or field name. The
// golden files hold the exact messages.
func TestConfigErrorMessages(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		file string // under testdata/config; "" for none
		env  []string
	}{
		{"typo", "typo.yaml", nil},
		{"misplaced", "misplaced.yaml", nil},
		{"enum", "enum.yaml", nil},
		{"address", "address.yaml", nil},
		{"types", "types.yaml", nil},
		{"twice", "twice.yaml", nil},
		{"syntax", "syntax.yaml", nil},
		{"notmapping", "notmapping.yaml", nil},
		{"missing-file", "does-not-exist.yaml", nil},
		{"env", "", []string{"BFFGATE_GATEWAY_SESSION_STORE=memcached", "BFFGATE_ISSUER_DENYLIST_CACHE_SIZE=many",
			`BFFGATE_GATEWAY_ROUTES=[{"prefix": "/v1/", "upstream": "http://127.0.0.1:7000", "strip": true}]`}},
		// --listen :48083 used to fail at start with "bff: PublicURL ...".
		{"public-url", "", []string{"BFFGATE_GATEWAY_LISTEN=:48083", "BFFGATE_GATEWAY_PUBLIC_URL=http://app.internal:48083"}},
		{"unsafe", "unsafe.yaml", nil},
		{"spa-dir", "spa-dir.yaml", nil},
		{"issuer-client", "issuer-client.yaml", nil},
		{"frontends", "frontends.yaml", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := ""
			if tt.file != "" {
				path = filepath.ToSlash(filepath.Join("testdata", "config", tt.file))
			}
			_, err := loadConfig(path, tt.env)
			if err == nil {
				t.Fatal("want an error")
			}
			msg := err.Error()
			for _, goWord := range []string{"main.", "type ", "PublicURL", "struct", "unmarshal", "!!"} {
				if strings.Contains(msg, goWord) {
					t.Errorf("error speaks Go (%q):\n%s", goWord, msg)
				}
			}
			golden(t, "config-"+tt.name, msg+"\n")
		})
	}
}
