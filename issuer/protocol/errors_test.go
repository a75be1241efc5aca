package protocol

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
)

func TestSentinels(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err    *Error
		code   string
		status int
	}{
		{ErrInvalidRequest, "invalid_request", http.StatusBadRequest},
		{ErrInvalidClient, "invalid_client", http.StatusUnauthorized},
		{ErrInvalidGrant, "invalid_grant", http.StatusBadRequest},
		{ErrUnauthorizedClient, "unauthorized_client", http.StatusBadRequest},
		{ErrUnsupportedGrantType, "unsupported_grant_type", http.StatusBadRequest},
		{ErrInvalidScope, "invalid_scope", http.StatusBadRequest},
		{ErrAccessDenied, "access_denied", http.StatusForbidden},
		{ErrUnsupportedResponseType, "unsupported_response_type", http.StatusBadRequest},
		{ErrServerError, "server_error", http.StatusInternalServerError},
		{ErrTemporarilyUnavailable, "temporarily_unavailable", http.StatusServiceUnavailable},
		{ErrLoginRequired, "login_required", http.StatusBadRequest},
		{ErrConsentRequired, "consent_required", http.StatusBadRequest},
		{ErrInteractionRequired, "interaction_required", http.StatusBadRequest},
		{ErrInvalidToken, "invalid_token", http.StatusUnauthorized},
		{ErrInsufficientScope, "insufficient_scope", http.StatusForbidden},
		{ErrUnsupportedTokenType, "unsupported_token_type", http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			t.Parallel()
			if tt.err.Code != tt.code || tt.err.Status != tt.status {
				t.Fatalf("got %s/%d, want %s/%d", tt.err.Code, tt.err.Status, tt.code, tt.status)
			}
			if tt.err.Description == "" {
				t.Fatal("sentinel has no default description")
			}
			// RFC 6749 §5.2: error_description is %x20-21 / %x23-5B / %x5D-7E.
			for _, r := range tt.err.Description {
				if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
					t.Fatalf("description has %q, outside RFC 6749 §5.2's charset", r)
				}
			}
			if tt.err.Cause() != nil {
				t.Fatal("sentinel has a cause")
			}
		})
	}
}

func TestCopiesLeaveSentinelsAlone(t *testing.T) {
	t.Parallel()
	before := *ErrInvalidGrant
	cause := io.ErrUnexpectedEOF
	e := ErrInvalidGrant.WithDescription("the code %s has expired", "x").WithCause(cause).WithStatus(http.StatusUnauthorized)
	if *ErrInvalidGrant != before {
		t.Fatalf("sentinel mutated: %+v", *ErrInvalidGrant)
	}
	if e.Description != "the code x has expired" || e.Status != 401 || e.Code != "invalid_grant" {
		t.Fatalf("copy: %+v", e)
	}
	if !errors.Is(e, ErrInvalidGrant) {
		t.Fatal("errors.Is(copy, sentinel) is false")
	}
	if errors.Is(e, ErrInvalidRequest) {
		t.Fatal("errors.Is matched another code")
	}
	if !errors.Is(e, io.ErrUnexpectedEOF) || e.Unwrap() != cause || e.Cause() != cause {
		t.Fatal("cause not reachable")
	}
	wrapped := fmt.Errorf("token endpoint: %w", e)
	if !errors.Is(wrapped, ErrInvalidGrant) {
		t.Fatal("errors.Is through a wrapper is false")
	}
	if got := e.Error(); !strings.Contains(got, "invalid_grant") || !strings.Contains(got, "unexpected EOF") {
		t.Fatalf("Error() = %q", got)
	}
	if d := ErrInvalidRequest.WithDescription("%d%% wrong", 100).Description; d != "100% wrong" {
		t.Fatalf("formatted description = %q", d)
	}
}

func TestAsError(t *testing.T) {
	t.Parallel()
	if AsError(nil) != nil {
		t.Fatal("AsError(nil) != nil")
	}
	pe := ErrInvalidScope.WithDescription("scope admin is not allowed")
	if got := AsError(fmt.Errorf("wrap: %w", pe)); got != pe {
		t.Fatalf("AsError lost the protocol error: %v", got)
	}
	plain := errors.New("disk on fire")
	got := AsError(plain)
	if !errors.Is(got, ErrServerError) || got.Status != 500 || got.Cause() != plain {
		t.Fatalf("AsError(plain) = %+v", got)
	}
	if strings.Contains(got.Description, "disk") {
		t.Fatal("the cause leaked into the description")
	}
	var typedNil *Error
	if AsError(typedNil) == nil {
		t.Fatal("AsError(typed nil) returned nil for a non-nil interface")
	}
}

func TestIsNil(t *testing.T) {
	t.Parallel()
	var e *Error
	if e.Is(ErrInvalidGrant) || ErrInvalidGrant.Is(e) || ErrInvalidGrant.Is(io.EOF) {
		t.Fatal("Is matched nil or a foreign error")
	}
	if e.Error() != "<nil>" {
		t.Fatal("nil Error()")
	}
}

// inDescriptionCharset reports whether s is within RFC 6749 §5.2's
// error_description characters: %x20-21 / %x23-5B / %x5D-7E.
func inDescriptionCharset(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 0x20 && c <= 0x21 || c >= 0x23 && c <= 0x5b || c >= 0x5d && c <= 0x7e) {
			return false
		}
	}
	return true
}

func TestSafeDescription(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"plain text, unchanged", "plain text, unchanged"},
		{"see RFC 6749 §3.2", "see RFC 6749 section 3.2"},
		{"see RFC 6749 § 3.2", "see RFC 6749 section 3.2"},
		{"ends with §", "ends with section"},
		{`client "spa" is unknown`, "client 'spa' is unknown"},
		{"“curly” ‘quotes’ «guillemets»", "'curly' 'quotes' 'guillemets'"},
		{"a – b — c", "a - b - c"},
		{"wait…", "wait..."},
		{"line\r\nbreak\ttab", "line  break tab"},
		{`back\slash`, "back?slash"},
		{"nul\x00 del\x7f", "nul? del?"},
		{"naïve 日本", "na?ve ??"},
		{"bad utf-8 \xff\xfe", "bad utf-8 ??"},
	} {
		if got := SafeDescription(tc.in); got != tc.want {
			t.Errorf("SafeDescription(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestWithDescriptionCharset is a property test: whatever the format and
// the arguments (client input quoted with %q included), a description made
// by WithDescription is within RFC 6749 §5.2's characters, and cleaning is
// idempotent.
func TestWithDescriptionCharset(t *testing.T) {
	t.Parallel()
	alphabet := []rune("aZ09 !#[]~\"\\§'\t\n\r\x00\x7f\u00e9\u00a0\u2014\u2026\u201c\U0001F600%q%s")
	rng := rand.New(rand.NewPCG(1, 2))
	random := func() string {
		n := rng.IntN(40)
		r := make([]rune, n)
		for i := range r {
			r[i] = alphabet[rng.IntN(len(alphabet))]
		}
		s := string(r)
		if rng.IntN(8) == 0 { // and now and then invalid UTF-8
			s += "\xc3"
		}
		return s
	}
	var noArgs []any
	for i := range 20000 {
		format, arg := random(), random()
		for _, d := range []string{
			// A format without arguments is taken as is (no Sprintf).
			ErrInvalidRequest.WithDescription(format, noArgs...).Description,
			ErrInvalidGrant.WithDescription(format, arg).Description,
			ErrInvalidScope.WithDescription("scope %q is unknown", arg).Description,
		} {
			if !inDescriptionCharset(d) {
				t.Fatalf("case %d: description %q (format %q, arg %q) is outside RFC 6749 §5.2's charset", i, d, format, arg)
			}
			if SafeDescription(d) != d {
				t.Fatalf("case %d: SafeDescription is not idempotent on %q", i, d)
			}
		}
	}
}

func FuzzSafeDescription(f *testing.F) {
	for _, s := range []string{"", "RFC 6749 §5.2", `"quoted"`, "\xff", "a\\b", "日本"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d := ErrInvalidRequest.WithDescription("got %q: %s", s, s).Description
		if !inDescriptionCharset(d) {
			t.Fatalf("description %q is outside RFC 6749 §5.2's charset", d)
		}
		if SafeDescription(d) != d {
			t.Fatalf("not idempotent on %q", d)
		}
		if descriptionSafe(s) && SafeDescription(s) != s {
			t.Fatalf("a clean description was changed: %q", s)
		}
	})
}
