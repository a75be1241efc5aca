package bff

import (
	"net/url"
	"path"
	"strings"
)

// maxReturnURL bounds the return URL: it rides in the flow cookie.
const maxReturnURL = 2048

// maxDecodeRounds is how many rounds of percent-decoding a return URL may
// need before it is refused as obfuscated.
const maxDecodeRounds = 4

// validReturnURL checks a login's returnUrl and returns it unchanged, or
// "/" for an empty one. Only a local path is accepted: no scheme, no host,
// no "//" or "/\" (which browsers resolve as a network-path reference to
// another host), no backslash, no control or non-ASCII bytes, and the same
// again after every round of percent-decoding (so %2f%2f, %5c and
// double-encoded forms cannot smuggle a host past the check to a later
// decoder). Paths that lead back into the login or callback endpoints are
// refused too: they would loop. This is the open-redirect defence of
// RFC 9700 section 4.11.
func validReturnURL(raw, basePath string) (string, error) {
	if raw == "" {
		return "/", nil
	}
	if len(raw) > maxReturnURL {
		return "", errReturnURL("it is longer than 2048 characters")
	}
	s := raw
	for round := 0; ; round++ {
		if err := checkPath(s, round == 0); err != nil {
			return "", err
		}
		dec, err := url.PathUnescape(s)
		if err != nil {
			return "", errReturnURL("it holds a malformed percent-encoding")
		}
		if dec == s {
			break
		}
		if round == maxDecodeRounds {
			return "", errReturnURL("it is percent-encoded too many times")
		}
		s = dec
	}
	// s is now fully decoded. Refuse paths into the flow endpoints.
	p := s
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	p = strings.ToLower(path.Clean(p))
	bp := strings.ToLower(basePath)
	for _, ep := range []string{"/login", "/callback", "/logout"} {
		if p == bp+ep || strings.HasPrefix(p, bp+ep+"/") {
			return "", errReturnURL("it points at the gateway's own " + strings.TrimPrefix(ep, "/") + " endpoint")
		}
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return "", errReturnURL("it names a scheme or a host (another site)")
	}
	return raw, nil
}

// checkLocalPath checks a configured local path (no decoding rounds).
func checkLocalPath(s string) error { return checkPath(s, true) }

// checkPath checks one form of a return URL: the raw form (strict: only
// printable ASCII without spaces) or a decoded one (where %20 and UTF-8
// legitimately become spaces and non-ASCII bytes).
func checkPath(s string, raw bool) error {
	if !strings.HasPrefix(s, "/") {
		return errReturnURL("it does not start with /")
	}
	if strings.HasPrefix(s, "//") {
		return errReturnURL("it starts with // (another host)")
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b == '\\':
			return errReturnURL("it contains a backslash")
		case b < 0x20 || b == 0x7f:
			return errReturnURL("it contains a control character")
		case raw && b == ' ':
			return errReturnURL("it contains a space (percent-encode it)")
		case raw && b >= 0x80:
			return errReturnURL("it contains non-ASCII bytes (percent-encode them)")
		}
	}
	// A colon before the first slash-free segment cannot occur (s starts
	// with /), but "/x:y" is a fine path; schemes are caught by url.Parse
	// in validReturnURL.
	return nil
}
