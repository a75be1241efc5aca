package protocol

import (
	"slices"
	"strings"
	"testing"
)

func TestParseScope(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{" ", nil},
		{"openid", []string{"openid"}},
		{"openid profile email", []string{"openid", "profile", "email"}},
		{"  openid   profile ", []string{"openid", "profile"}},
		{"openid openid profile", []string{"openid", "profile"}},
		{"OpenID openid", []string{"OpenID", "openid"}}, // case-sensitive
		{"a\tb", []string{"a\tb"}},                      // only space delimits
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			if got := ParseScope(tt.in); !slices.Equal(got, tt.want) {
				t.Fatalf("ParseScope(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestJoinHasSubset(t *testing.T) {
	t.Parallel()
	if got := JoinScope([]string{"openid", "", "profile", "openid"}); got != "openid profile" {
		t.Fatalf("JoinScope = %q", got)
	}
	if JoinScope(nil) != "" {
		t.Fatal("JoinScope(nil)")
	}
	tests := []struct {
		scope, want string
		has         bool
	}{
		{"openid profile", "openid", true},
		{"openid profile", "profile", true},
		{"openid profile", "open", false},
		{"openid profile", "", false},
		{"", "openid", false},
		{"openid  profile", "profile", true},
		{"Openid", "openid", false},
	}
	for _, tt := range tests {
		if got := HasScope(tt.scope, tt.want); got != tt.has {
			t.Errorf("HasScope(%q, %q) = %v", tt.scope, tt.want, got)
		}
	}
	if !SubsetScope("openid", "openid profile") || !SubsetScope("", "openid") || SubsetScope("openid admin", "openid profile") {
		t.Error("SubsetScope")
	}
	valid := map[string]bool{
		"": true, "openid profile": true, "a!#[]~": true,
		`a"b`: false, `a\b`: false, "a\x7fb": false, "é": false, "a\tb": false,
	}
	for s, want := range valid {
		if got := ValidScope(s); got != want {
			t.Errorf("ValidScope(%q) = %v, want %v", s, got, want)
		}
	}
}

func FuzzParseScope(f *testing.F) {
	for _, s := range []string{"", "openid", "openid profile email", "  a  b ", "a a", "\x00 \xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := ParseScope(s)
		seen := map[string]bool{}
		for _, tok := range got {
			if tok == "" || strings.Contains(tok, " ") {
				t.Fatalf("token %q", tok)
			}
			if seen[tok] {
				t.Fatalf("duplicate %q", tok)
			}
			seen[tok] = true
			if !HasScope(s, tok) {
				t.Fatalf("HasScope(%q, %q) false for a parsed token", s, tok)
			}
		}
		// Join then parse is the identity on parsed scopes.
		if again := ParseScope(JoinScope(got)); !slices.Equal(again, got) {
			t.Fatalf("round trip %q -> %q", got, again)
		}
		if !SubsetScope(s, s) {
			t.Fatal("a scope is not a subset of itself")
		}
	})
}
