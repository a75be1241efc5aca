package protocol

import "strings"

// ParseScope splits a scope parameter into its tokens (RFC 6749 §3.3: a
// list of space-delimited, case-sensitive strings). Runs of spaces are
// tolerated, empty tokens dropped and duplicates removed, keeping the first
// occurrence's order. It does not validate the characters; ValidScope does.
func ParseScope(s string) []string {
	if s == "" {
		return nil
	}
	fields := strings.Split(s, " ")
	out := make([]string, 0, len(fields))
	for _, f := range fields {
		if f == "" || containsString(out, f) {
			continue
		}
		out = append(out, f)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// JoinScope joins scope tokens with single spaces (RFC 6749 §3.3), dropping
// empty tokens and duplicates.
func JoinScope(scopes []string) string {
	var b strings.Builder
	seen := make([]string, 0, len(scopes))
	for _, s := range scopes {
		if s == "" || containsString(seen, s) {
			continue
		}
		seen = append(seen, s)
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(s)
	}
	return b.String()
}

// HasScope reports whether the space-delimited scope string contains want
// as a whole token (case-sensitive, RFC 6749 §3.3): "openid profile" has
// "openid" but not "open".
func HasScope(scope, want string) bool {
	if want == "" {
		return false
	}
	for _, s := range strings.Split(scope, " ") {
		if s == want {
			return true
		}
	}
	return false
}

// ValidScopeToken reports whether tok is a scope-token per RFC 6749 §3.3:
// one or more of %x21 / %x23-5B / %x5D-7E (printable ASCII except space,
// double quote and backslash).
func ValidScopeToken(tok string) bool {
	if tok == "" {
		return false
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// ValidScope reports whether every token of the space-delimited scope is a
// valid scope-token (RFC 6749 §3.3). The empty scope is valid (no scope
// requested).
func ValidScope(scope string) bool {
	for _, s := range ParseScope(scope) {
		if !ValidScopeToken(s) {
			return false
		}
	}
	return true
}

// SubsetScope reports whether every token of requested is also in granted
// (RFC 6749 §6: a refresh request "MUST NOT include any scope not
// originally granted").
func SubsetScope(requested, granted string) bool {
	g := ParseScope(granted)
	for _, r := range ParseScope(requested) {
		if !containsString(g, r) {
			return false
		}
	}
	return true
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
