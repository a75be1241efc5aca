package protocol

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"golang.org/x/oauth2"
)

// RFC 7636 Appendix B.
const (
	rfcVerifier  = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
	rfcChallenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
)

func TestVerifyPKCE(t *testing.T) {
	t.Parallel()
	gen := oauth2.GenerateVerifier()
	long := strings.Repeat("a", 128)
	tests := []struct {
		name, verifier, challenge, method string
		ok                                bool
		descContains                      string
	}{
		{"rfc7636 appendix B", rfcVerifier, rfcChallenge, "S256", true, ""},
		{"x/oauth2 generated", gen, oauth2.S256ChallengeFromVerifier(gen), "S256", true, ""},
		{"128 chars", long, s256(long), "S256", true, ""},
		{"all allowed chars", "ABCXYZabcxyz0189-._~" + strings.Repeat("Z", 23), s256("ABCXYZabcxyz0189-._~" + strings.Repeat("Z", 23)), "S256", true, ""},
		{"wrong verifier", gen, rfcChallenge, "S256", false, "does not match"},
		{"no challenge stored", rfcVerifier, "", "S256", false, "PKCE (S256) is required"},
		{"plain refused", rfcVerifier, rfcVerifier, "plain", false, "only S256"},
		{"absent method means plain", rfcVerifier, rfcVerifier, "", false, "'plain'"},
		{"unknown method", rfcVerifier, rfcChallenge, "S512", false, "only S256"},
		{"method case matters", rfcVerifier, rfcChallenge, "s256", false, "only S256"},
		{"missing verifier", "", rfcChallenge, "S256", false, "missing"},
		{"42 chars", rfcVerifier[:42], s256(rfcVerifier[:42]), "S256", false, "43 to 128"},
		{"129 chars", long + "a", s256(long + "a"), "S256", false, "43 to 128"},
		{"bad char", strings.Repeat("a", 42) + "+", s256(strings.Repeat("a", 42) + "+"), "S256", false, "characters outside"},
		{"space", strings.Repeat("a", 42) + " ", s256(strings.Repeat("a", 42) + " "), "S256", false, "characters outside"},
		{"padded challenge", rfcVerifier, rfcChallenge + "=", "S256", false, "does not match"},
		{"challenge in std base64", rfcVerifier, base64.StdEncoding.EncodeToString(sum(rfcVerifier)), "S256", false, "does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := VerifyPKCE(tt.verifier, tt.challenge, tt.method)
			if tt.ok {
				if err != nil {
					t.Fatalf("VerifyPKCE: %v", err)
				}
				return
			}
			var pe *Error
			if !errors.As(err, &pe) || !errors.Is(err, ErrInvalidGrant) || pe.Status != 400 {
				t.Fatalf("want invalid_grant *Error, got %v", err)
			}
			if !strings.Contains(pe.Description, tt.descContains) {
				t.Fatalf("description %q lacks %q", pe.Description, tt.descContains)
			}
			if tt.verifier != "" && len(tt.verifier) > 8 && strings.Contains(pe.Error(), tt.verifier) {
				t.Fatal("the verifier leaked into the error")
			}
		})
	}
}

func sum(v string) []byte  { s := sha256.Sum256([]byte(v)); return s[:] }
func s256(v string) string { return base64.RawURLEncoding.EncodeToString(sum(v)) }

func FuzzVerifyPKCE(f *testing.F) {
	f.Add(rfcVerifier, rfcChallenge, "S256")
	f.Add(rfcVerifier, rfcVerifier, "plain")
	f.Add("", "", "")
	f.Add(strings.Repeat("~", 43), "x", "S256")
	f.Fuzz(func(t *testing.T, verifier, challenge, method string) {
		err := VerifyPKCE(verifier, challenge, method)
		if err == nil {
			// Accepted only for S256, a well-formed verifier, and the
			// matching challenge.
			if method != "S256" || len(verifier) < 43 || len(verifier) > 128 || !validVerifier(verifier) || challenge != s256(verifier) {
				t.Fatalf("accepted verifier %q challenge %q method %q", verifier, challenge, method)
			}
			return
		}
		if !errors.Is(err, ErrInvalidGrant) {
			t.Fatalf("error is not invalid_grant: %v", err)
		}
		// Well-formed S256 with the right challenge must pass.
		if method == "S256" && len(verifier) >= 43 && len(verifier) <= 128 && validVerifier(verifier) && challenge == s256(verifier) {
			t.Fatalf("refused a valid pair: %v", err)
		}
	})
}
