package proxy

import "bytes"

// cleanPath normalises a raw request path (still percent-encoded, as it
// came off the wire) into dst and reports whether it is acceptable.
//
// It removes dot segments as RFC 3986 §5.2.4 does, counting the
// percent-encoded forms ("%2e", ".%2E", ...) as dots too (RFC 3986 §2.3:
// an upstream that decodes first would resolve them), and collapses empty
// segments ("//"), so that "/api/../admin", "/api/%2e%2e/admin" and
// "//admin" cannot leave the route they matched. Everything else stays
// encoded exactly as the client sent it: "%2F" inside a segment is data
// to many APIs (GitLab's "group%2Fproject").
//
// It refuses (false) a path that is not origin-form (no leading "/"),
// has malformed percent-encoding, control characters, a NUL or a
// backslash in any encoding (some servers treat "\" as "/"), or a
// segment that an upstream decoding "%2F" would turn into a traversal
// ("..%2F..%2Fadmin").
func cleanPath(raw, dst []byte) ([]byte, bool) {
	dst = dst[:0]
	if len(raw) == 0 {
		return append(dst, '/'), true
	}
	if raw[0] != '/' {
		return dst, false
	}
	for i := 0; i < len(raw); i++ {
		b := raw[i]
		switch {
		case b <= 0x20 || b == 0x7f || b == '\\' || b == '#' || b == '?':
			return dst, false
		case b == '%':
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return dst, false
			}
			d := unhex(raw[i+1])<<4 | unhex(raw[i+2])
			if d < 0x20 || d == 0x7f || d == '\\' {
				return dst, false
			}
			i += 2
		}
	}

	dst = append(dst, '/')
	for i := 1; i <= len(raw); {
		j := bytes.IndexByte(raw[i:], '/')
		if j < 0 {
			j = len(raw)
		} else {
			j += i
		}
		seg := raw[i:j]
		last := j == len(raw)
		switch dots := dotSegment(seg); {
		case len(seg) == 0 || dots == 1:
			// "//" or "/./": nothing to add; dst already ends in "/".
		case dots == 2:
			// Drop the last output segment, keeping its leading "/";
			// above the root there is nothing to drop (RFC 3986 §5.2.4).
			if len(dst) > 1 {
				k := bytes.LastIndexByte(dst[:len(dst)-1], '/')
				dst = dst[:k+1]
			}
		default:
			if hidesTraversal(seg) {
				return dst, false
			}
			dst = append(dst, seg...)
			if !last {
				dst = append(dst, '/')
			}
		}
		i = j + 1
	}
	return dst, true
}

// dotSegment returns 1 for ".", 2 for "..", in any mix of "." and "%2e",
// and 0 otherwise.
func dotSegment(seg []byte) int {
	n := 0
	for i := 0; i < len(seg); {
		switch {
		case seg[i] == '.':
			i++
		case seg[i] == '%' && i+2 < len(seg) && seg[i+1] == '2' && (seg[i+2] == 'e' || seg[i+2] == 'E'):
			i += 3
		default:
			return 0
		}
		n++
		if n > 2 {
			return 0
		}
	}
	return n
}

// hidesTraversal reports whether a segment carrying an encoded slash
// decodes into a path with a "." or ".." segment.
func hidesTraversal(seg []byte) bool {
	if !bytes.Contains(seg, []byte("%2f")) && !bytes.Contains(seg, []byte("%2F")) {
		return false
	}
	dec := make([]byte, 0, len(seg))
	for i := 0; i < len(seg); i++ {
		if seg[i] == '%' && i+2 < len(seg) {
			dec = append(dec, unhex(seg[i+1])<<4|unhex(seg[i+2]))
			i += 2
			continue
		}
		dec = append(dec, seg[i])
	}
	for _, part := range bytes.Split(dec, []byte("/")) {
		if string(part) == "." || string(part) == ".." {
			return true
		}
	}
	return false
}

// matchPrefix reports whether the normalised path lies under prefix (no
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

// upstreamPath appends to dst the route's base path and the normalised
// request path, without the prefix when the route strips it.
func (rt *route) upstreamPath(path, dst []byte) []byte {
	dst = append(dst, rt.basePath...)
	if rt.StripPrefix && rt.prefix != "/" {
		path = path[len(rt.prefix):]
		if len(path) == 0 {
			path = slash
		}
	}
	return append(dst, path...)
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
