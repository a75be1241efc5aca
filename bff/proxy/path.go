package proxy

import "bytes"

// maxDecodeRounds is how many rounds of percent-decoding a path segment
// may take before it is refused as obfuscated (as bff's returnUrl check
// does): "%25252e" needs three.
const maxDecodeRounds = 4

// parsePath checks a raw request path (still percent-encoded, as it came
// off the wire: fasthttp's URI.PathOriginal, never URI.Path, which
// fasthttp has already decoded and resolved) and returns two forms of it:
//
//   - fwd, what the upstream receives: the raw path with empty segments
//     ("//") removed and nothing else changed, so "%2F"-free encodings,
//     path parameters and the case of every byte reach the upstream as
//     the client sent them;
//   - canon, what routes are matched on: every segment percent-decoded
//     until nothing changes and cut at its first ";", which is how the
//     upstream servers that route on decoded paths and drop path
//     parameters (Tomcat, Jetty, Spring) will see it. A route prefix that
//     matches canon is therefore the prefix the upstream routes on.
//
// fwd and canon have the same number of segments, so that a route's
// StripPrefix can remove the prefix's segments from fwd.
//
// It refuses, with a *PathError, any path an upstream could resolve
// differently from the gateway (RFC 3986 §5.2.4 dot segments, in any
// encoding): a segment that is "." or ".." after decoding, or before its
// first ";" (Tomcat and Jetty read "..;x" as ".."), or made only of dots
// and spaces (Windows servers trim trailing dots and spaces); an encoded
// slash or backslash in a segment (an upstream decoding "%2F" splits the
// segment, and some treat "\" as "/"); a raw backslash; control
// characters, raw or encoded; malformed percent-encoding; encodings
// nested more than maxDecodeRounds deep; a segment made only of path
// parameters (";x": an upstream dropping them would see an empty
// segment the gateway did not match on); a path that is not origin-form.
//
// Dot segments are refused rather than resolved: a browser resolves them
// before it sends a request (RFC 3986 §5.2), so a request that still has
// them was crafted, and resolving them would only hide the attempt.
func parsePath(raw, fwd, canon []byte) ([]byte, []byte, error) {
	fwd, canon = fwd[:0], canon[:0]
	if len(raw) == 0 {
		return append(fwd, '/'), append(canon, '/'), nil
	}
	if raw[0] != '/' {
		return fwd, canon, pathErr("it does not start with /")
	}
	for i := 0; i < len(raw); i++ {
		switch b := raw[i]; {
		case b == '\\':
			return fwd, canon, pathErr("it contains a backslash")
		case b <= 0x20 || b == 0x7f:
			return fwd, canon, pathErr("it contains a space or a control character (percent-encode spaces)")
		case b == '#' || b == '?':
			return fwd, canon, pathErr("it contains a raw # or ?")
		case b == '%':
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return fwd, canon, pathErr("it contains a malformed percent-encoding (a % not followed by two hex digits)")
			}
			i += 2
		}
	}

	fwd = append(fwd, '/')
	canon = append(canon, '/')
	for i := 1; i <= len(raw); {
		j := bytes.IndexByte(raw[i:], '/')
		if j < 0 {
			j = len(raw)
		} else {
			j += i
		}
		seg := raw[i:j]
		last := j == len(raw)
		i = j + 1
		if len(seg) == 0 {
			// "//": nothing to add; both forms already end in "/".
			continue
		}
		var err error
		if canon, err = appendCanonical(canon, seg); err != nil {
			return fwd, canon, err
		}
		fwd = append(fwd, seg...)
		if !last {
			fwd = append(fwd, '/')
			canon = append(canon, '/')
		}
	}
	return fwd, canon, nil
}

// CheckPath reports whether a raw request path (fasthttp's
// URI.PathOriginal, as the client sent it) is one the proxy forwards; the
// error is a *PathError matching ErrInvalidPath and says what is wrong.
// The gateway calls it on every path before it matches routes, so that a
// path the proxy refuses is refused for the SPA handler (which may proxy
// to a dev server) too. See parsePath for what is refused and why.
func CheckPath(raw []byte) error {
	var fb, cb [256]byte
	_, _, err := parsePath(raw, fb[:0], cb[:0])
	return err
}

// CanonicalPath returns the canonical form of a raw request path, the one
// routes are matched on (decoded, path parameters removed: see parsePath),
// as a new string: what an authorization rule over the path must read,
// so that "/api/%61dmin" is "/api/admin" to the rule as it is to the
// upstream. It fails as CheckPath does.
func CanonicalPath(raw []byte) (string, error) {
	var fb, cb [256]byte
	_, canon, err := parsePath(raw, fb[:0], cb[:0])
	if err != nil {
		return "", err
	}
	return string(canon), nil
}

// appendCanonical appends the canonical form of one raw segment (already
// checked for malformed escapes) to dst: decoded until stable, cut at the
// first ";". It refuses the segment as parsePath documents.
func appendCanonical(dst, seg []byte) ([]byte, error) {
	start := len(dst)
	dst = append(dst, seg...)
	for round := 0; bytes.IndexByte(dst[start:], '%') >= 0; round++ {
		dec, changed, err := decodeRound(dst[start:])
		if err != nil {
			return dst, err
		}
		if !changed {
			break // only literal "%"s left (a decoded "%25")
		}
		if round == maxDecodeRounds {
			return dst, pathErr("a segment is percent-encoded too many times")
		}
		dst = dst[:start+len(dec)]
	}
	name := dst[start:]
	if k := bytes.IndexByte(name, ';'); k >= 0 {
		if k == 0 {
			return dst, pathErr("a segment holds only path parameters (it starts with ;)")
		}
		name = name[:k]
		dst = dst[:start+k]
	}
	if dotsOnly(name) {
		return dst, pathErr("it has a . or .. segment (percent-encoded, with ;parameters or trailing spaces included)")
	}
	return dst, nil
}

// decodeRound percent-decodes b in place once and reports whether
// anything changed. Escapes that are not two hex digits stay literal (a
// decoded "%25" followed by text): a later decoder cannot read them as
// anything else either. Decoding to a slash, a backslash or a control
// character is refused.
func decodeRound(b []byte) ([]byte, bool, error) {
	w := 0
	changed := false
	for r := 0; r < len(b); r++ {
		c := b[r]
		if c == '%' && r+2 < len(b) && isHex(b[r+1]) && isHex(b[r+2]) {
			c = unhex(b[r+1])<<4 | unhex(b[r+2])
			r += 2
			changed = true
			switch {
			case c == '/' || c == '\\':
				return b, false, pathErr("a segment contains an encoded slash or backslash (%2F, %5C)")
			case c < 0x20 || c == 0x7f:
				return b, false, pathErr("it contains an encoded control character")
			}
		}
		b[w] = c
		w++
	}
	return b[:w], changed, nil
}

// dotsOnly reports whether a decoded segment name is made of dots and
// spaces with at least one dot: ".", "..", and the "..." and ".. " that
// Windows servers trim to "..".
func dotsOnly(name []byte) bool {
	dot := false
	for _, c := range name {
		switch c {
		case '.':
			dot = true
		case ' ':
		default:
			return false
		}
	}
	return dot
}

// matchPrefix reports whether the canonical path lies under prefix (no
// trailing slash; "/" for the root) on a segment boundary.
func matchPrefix(path []byte, prefix string) bool {
	if prefix == "/" {
		return true
	}
	if len(path) < len(prefix) || string(path[:len(prefix)]) != prefix {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '/'
}

// upstreamPath appends to dst the route's base path and the forwarded
// request path, without the prefix's segments when the route strips it.
// fwd has as many segments as the canonical path the prefix matched.
func (rt *route) upstreamPath(fwd, dst []byte) []byte {
	dst = append(dst, rt.basePath...)
	if rt.StripPrefix && rt.segments > 0 {
		// Skip the prefix's segments: find the slash that starts the
		// segment after them.
		k, n := 0, 0
		for k = 1; k < len(fwd); k++ {
			if fwd[k] == '/' {
				if n++; n == rt.segments {
					break
				}
			}
		}
		fwd = fwd[k:]
		if len(fwd) == 0 {
			fwd = slash
		}
	}
	return append(dst, fwd...)
}

var slash = []byte{'/'}

func isHex(b byte) bool {
	return b >= '0' && b <= '9' || b >= 'a' && b <= 'f' || b >= 'A' && b <= 'F'
}

func unhex(b byte) byte {
	switch {
	case b >= '0' && b <= '9':
		return b - '0'
	case b >= 'a' && b <= 'f':
		return b - 'a' + 10
	case b >= 'A' && b <= 'F':
		return b - 'A' + 10
	}
	return 0
}
