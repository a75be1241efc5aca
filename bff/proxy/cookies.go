package proxy

import "bytes"

// EachCookie calls fn with the name and value of each cookie in a raw
// Cookie request header ("a=1; b=2"), in order, until fn returns false.
// Names and values are trimmed of spaces and tabs; a pair without "="
// has an empty name and the pair as its value (as fasthttp reads it).
// name and value alias header: copy what outlives the call.
//
// Written by hand, not fasthttp's RequestHeader.Cookie or VisitAllCookie:
// those parse every cookie into fasthttp's list (copying each value) the
// first time one is asked for, and VisitAll then rebuilds the header
// from the list. With cookie sessions the header is about 5 KB, and
// parsing and copying it twice was a tenth of the gateway's CPU per
// proxied request (e2e/bench profiles). This scans with bytes.IndexByte
// and copies nothing.
func EachCookie(header []byte, fn func(name, value []byte) bool) {
	for len(header) > 0 {
		pair := header
		if i := bytes.IndexByte(header, ';'); i >= 0 {
			pair, header = header[:i], header[i+1:]
		} else {
			header = nil
		}
		pair = trimSpace(pair)
		if len(pair) == 0 {
			continue
		}
		var name, value []byte
		if i := bytes.IndexByte(pair, '='); i >= 0 {
			name, value = trimSpace(pair[:i]), trimSpace(pair[i+1:])
		} else {
			value = pair
		}
		if !fn(name, value) {
			return
		}
	}
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}
