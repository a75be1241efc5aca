// Package codec holds the wire formats of a session.Session: a compact
// binary encoding (Marshal, Unmarshal) used inside the cookie store's sealed
// cookie and the server-side stores' records, and the ticket (ticket.go) that
// names and seals a session in a server-side store.
//
// # Encoding
//
// A cookie store session travels in every request, so bytes count: the
// value is sealed by securecookie and base64-encoded twice on its way into
// the Cookie header, so each byte saved here saves about 1.8 bytes of cookie.
// The encoding is therefore neither gob (type descriptors on every value)
// nor JSON (field names, and []byte base64-encoded once more):
//
//	version   1 byte (1)
//	presence  uvarint bit set: which fields follow, and which tokens use
//	          the JWT form
//	fields    in declaration order, only those present:
//	          strings and bytes: uvarint length, then the bytes
//	          tokens in the JWT form: uvarint segment count (2..5), then each
//	          base64url segment decoded, as uvarint length and bytes
//	          times: varint Unix seconds, uvarint nanoseconds
//	          IdleTimeout: varint nanoseconds; Version: uvarint;
//	          Frontend (added later, last): a string
//
// The JWT form stores a compact JWS (3 segments) or JWE (5 segments) with its
// base64url segments decoded, a quarter smaller. It is used only when the
// token re-encodes to exactly the same string, so every token round-trips
// byte for byte; opaque tokens use the plain string form.
//
// Times are kept to the nanosecond and decode in UTC. Empty strings and zero
// times are absent; a nil Claims is absent while an empty non-nil Claims is
// present with length 0, so both round-trip.
//
// # Caveats
//
// Unmarshal reads what a browser sent only after securecookie or AES-GCM has
// authenticated it, but it is written as if it read the attacker's bytes
// directly: every length is checked against what is left, unknown versions
// and presence bits are refused, trailing bytes are refused, and it never
// panics (FuzzUnmarshal).
package codec

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/bffgate/bffgate/session"
)

// Version is the encoding version Marshal writes, the first byte of every
// encoded session.
const Version = 1

// MaxSize is the largest encoding Unmarshal accepts (1 MiB). No store keeps
// sessions near this size; the bound stops a corrupt length from asking for
// more.
const MaxSize = 1 << 20

// Presence bits, in field order. The last three mark tokens stored in the
// JWT form.
const (
	bitID = 1 << iota
	bitSubject
	bitSID
	bitIssuer
	bitClaims
	bitIDToken
	bitAccessToken
	bitRefreshToken
	bitTokenType
	bitAccessExpiry
	bitCreated
	bitLastSeen
	bitIdleTimeout
	bitAbsoluteExpiry
	bitVersion
	bitIDTokenJWT
	bitAccessTokenJWT
	bitRefreshTokenJWT
	// bitFrontend was added after the first release: records and cookies
	// written before it have no frontend, which is the classic one.
	bitFrontend

	allBits = 1<<iota - 1
)

// Bounds of the times the encoding holds: years 1 to 9999, the range in
// which time.Unix and Time.Unix are exact inverses.
const (
	minUnix = -62135596800 // 0001-01-01T00:00:00Z
	maxUnix = 253402300799 // 9999-12-31T23:59:59Z
)

// maxSegments is the most base64url segments a token in the JWT form has
// (a compact JWE has five).
const maxSegments = 5

// Marshal encodes s. A nil s encodes as the empty session. Marshal never
// fails: every Session value has an encoding. Times outside years 1 to
// 9999 are clamped to those bounds (a time before year 1 becomes one
// nanosecond past the zero time, so that it stays present and in the past:
// an AbsoluteExpiry never turns into "no expiry").
func Marshal(s *session.Session) []byte {
	if s == nil {
		s = &session.Session{}
	}
	var bits uint64
	str := func(v string, bit uint64) {
		if v != "" {
			bits |= bit
		}
	}
	str(s.ID, bitID)
	str(s.Subject, bitSubject)
	str(s.SID, bitSID)
	str(s.Issuer, bitIssuer)
	if s.Claims != nil {
		bits |= bitClaims
	}
	idSeg, idJWT := jwtSegments(s.IDToken)
	atSeg, atJWT := jwtSegments(s.AccessToken)
	rtSeg, rtJWT := jwtSegments(s.RefreshToken)
	str(s.IDToken, bitIDToken)
	str(s.AccessToken, bitAccessToken)
	str(s.RefreshToken, bitRefreshToken)
	if idJWT {
		bits |= bitIDTokenJWT
	}
	if atJWT {
		bits |= bitAccessTokenJWT
	}
	if rtJWT {
		bits |= bitRefreshTokenJWT
	}
	str(s.TokenType, bitTokenType)
	tm := func(t time.Time, bit uint64) {
		if !t.IsZero() {
			bits |= bit
		}
	}
	tm(s.AccessExpiry, bitAccessExpiry)
	tm(s.Created, bitCreated)
	tm(s.LastSeen, bitLastSeen)
	if s.IdleTimeout != 0 {
		bits |= bitIdleTimeout
	}
	tm(s.AbsoluteExpiry, bitAbsoluteExpiry)
	if s.Version != 0 {
		bits |= bitVersion
	}
	str(s.Frontend, bitFrontend)

	b := make([]byte, 0, 64+len(s.Frontend)+len(s.ID)+len(s.Subject)+len(s.SID)+len(s.Issuer)+len(s.Claims)+
		len(s.IDToken)+len(s.AccessToken)+len(s.RefreshToken)+len(s.TokenType))
	b = append(b, Version)
	b = binary.AppendUvarint(b, bits)
	b = appendString(b, s.ID)
	b = appendString(b, s.Subject)
	b = appendString(b, s.SID)
	b = appendString(b, s.Issuer)
	if s.Claims != nil {
		b = binary.AppendUvarint(b, uint64(len(s.Claims)))
		b = append(b, s.Claims...)
	}
	b = appendToken(b, s.IDToken, idSeg, idJWT)
	b = appendToken(b, s.AccessToken, atSeg, atJWT)
	b = appendToken(b, s.RefreshToken, rtSeg, rtJWT)
	b = appendString(b, s.TokenType)
	b = appendTime(b, s.AccessExpiry)
	b = appendTime(b, s.Created)
	b = appendTime(b, s.LastSeen)
	if s.IdleTimeout != 0 {
		b = binary.AppendVarint(b, int64(s.IdleTimeout))
	}
	b = appendTime(b, s.AbsoluteExpiry)
	if s.Version != 0 {
		b = binary.AppendUvarint(b, s.Version)
	}
	return appendString(b, s.Frontend)
}

// Unmarshal decodes an encoding made by Marshal. It returns an error
// wrapping ErrMalformed for anything else: an unknown version (wrapping
// ErrUnknownVersion as well), unknown presence bits, a length past the end,
// a time out of range, or trailing bytes.
func Unmarshal(b []byte) (*session.Session, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrMalformed)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(b), MaxSize)
	}
	if b[0] != Version {
		return nil, fmt.Errorf("%w: %w %d", ErrMalformed, ErrUnknownVersion, b[0])
	}
	d := decoder{b: b[1:]}
	bits := d.uvarint("presence")
	if d.err == nil && bits&^allBits != 0 {
		return nil, fmt.Errorf("%w: unknown presence bits %#x", ErrMalformed, bits&^allBits)
	}
	for _, pair := range [][2]uint64{
		{bitIDTokenJWT, bitIDToken},
		{bitAccessTokenJWT, bitAccessToken},
		{bitRefreshTokenJWT, bitRefreshToken},
	} {
		if bits&pair[0] != 0 && bits&pair[1] == 0 {
			return nil, fmt.Errorf("%w: JWT form bit without its token", ErrMalformed)
		}
	}
	s := &session.Session{}
	has := func(bit uint64) bool { return d.err == nil && bits&bit != 0 }
	if has(bitID) {
		s.ID = d.string("ID")
	}
	if has(bitSubject) {
		s.Subject = d.string("Subject")
	}
	if has(bitSID) {
		s.SID = d.string("SID")
	}
	if has(bitIssuer) {
		s.Issuer = d.string("Issuer")
	}
	if has(bitClaims) {
		// A copy: d.bytes aliases b, which Open clears after decoding.
		s.Claims = bytes.Clone(d.bytes("Claims"))
	}
	if has(bitIDToken) {
		s.IDToken = d.token("IDToken", bits&bitIDTokenJWT != 0)
	}
	if has(bitAccessToken) {
		s.AccessToken = d.token("AccessToken", bits&bitAccessTokenJWT != 0)
	}
	if has(bitRefreshToken) {
		s.RefreshToken = d.token("RefreshToken", bits&bitRefreshTokenJWT != 0)
	}
	if has(bitTokenType) {
		s.TokenType = d.string("TokenType")
	}
	if has(bitAccessExpiry) {
		s.AccessExpiry = d.time("AccessExpiry")
	}
	if has(bitCreated) {
		s.Created = d.time("Created")
	}
	if has(bitLastSeen) {
		s.LastSeen = d.time("LastSeen")
	}
	if has(bitIdleTimeout) {
		s.IdleTimeout = time.Duration(d.varint("IdleTimeout"))
	}
	if has(bitAbsoluteExpiry) {
		s.AbsoluteExpiry = d.time("AbsoluteExpiry")
	}
	if has(bitVersion) {
		s.Version = d.uvarint("Version")
	}
	if has(bitFrontend) {
		s.Frontend = d.string("Frontend")
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(d.b))
	}
	return s, nil
}

func appendString(b []byte, v string) []byte {
	if v == "" {
		return b
	}
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendToken(b []byte, tok string, segs [][]byte, jwt bool) []byte {
	if !jwt {
		return appendString(b, tok)
	}
	b = binary.AppendUvarint(b, uint64(len(segs)))
	for _, seg := range segs {
		b = binary.AppendUvarint(b, uint64(len(seg)))
		b = append(b, seg...)
	}
	return b
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return b
	}
	sec, nsec := t.Unix(), t.Nanosecond()
	switch {
	case sec < minUnix:
		sec, nsec = minUnix, 1
	case sec > maxUnix:
		sec, nsec = maxUnix, 999999999
	}
	b = binary.AppendVarint(b, sec)
	return binary.AppendUvarint(b, uint64(nsec))
}

// jwtSegments reports whether tok is a compact JWS or JWE whose base64url
// segments re-encode to exactly tok, and returns the decoded segments.
func jwtSegments(tok string) ([][]byte, bool) {
	n := strings.Count(tok, ".") + 1
	if n != 3 && n != maxSegments {
		return nil, false
	}
	segs := make([][]byte, 0, n)
	for seg := range strings.SplitSeq(tok, ".") {
		raw, ok := decodeCanonical(seg)
		if !ok {
			return nil, false
		}
		segs = append(segs, raw)
	}
	return segs, true
}

// decodeCanonical decodes seg if it is unpadded base64url that re-encodes
// to itself: only alphabet characters (the decoder would skip CR and LF),
// a possible length, and zero bits past the last byte (Strict).
func decodeCanonical(seg string) ([]byte, bool) {
	if !canonicalAlphabet(seg) {
		return nil, false
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(seg)
	return raw, err == nil
}

// canonicalAlphabet reports whether seg holds base64url's alphabet only.
func canonicalAlphabet(seg string) bool {
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// decoder reads fields, remembering the first error; once it has failed
// every read returns a zero value.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(field, format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s: %s", ErrMalformed, field, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(field, "bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(field string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(field, "bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// bytes returns the next length-prefixed field, aliasing the input.
func (d *decoder) bytes(field string) []byte {
	n := d.uvarint(field)
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail(field, "length %d past the end (%d bytes left)", n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string(field string) string {
	return string(d.bytes(field))
}

func (d *decoder) token(field string, jwt bool) string {
	if !jwt {
		return d.string(field)
	}
	n := d.uvarint(field)
	if d.err != nil {
		return ""
	}
	if n != 3 && n != maxSegments {
		d.fail(field, "%d JWT segments, want 3 or %d", n, maxSegments)
		return ""
	}
	var sb strings.Builder
	for i := uint64(0); i < n; i++ {
		seg := d.bytes(field)
		if d.err != nil {
			return ""
		}
		if i > 0 {
			sb.WriteByte('.')
		}
		sb.WriteString(base64.RawURLEncoding.EncodeToString(seg))
	}
	return sb.String()
}

func (d *decoder) time(field string) time.Time {
	sec := d.varint(field)
	nsec := d.uvarint(field)
	if d.err != nil {
		return time.Time{}
	}
	if sec < minUnix || sec > maxUnix {
		d.fail(field, "seconds %d outside years 1 to 9999", sec)
		return time.Time{}
	}
	if nsec >= 1e9 {
		d.fail(field, "nanoseconds %d out of range", nsec)
		return time.Time{}
	}
	t := time.Unix(sec, int64(nsec)).UTC()
	if t.IsZero() {
		// The zero time is encoded as absent, never present.
		d.fail(field, "zero time encoded as present")
		return time.Time{}
	}
	return t
}
