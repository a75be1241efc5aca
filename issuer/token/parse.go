package token

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Parse verifies raw as a kind token of this issuer and returns its claims.
//
// Checks, in order: the compact shape of the format (JWS for signed and ID
// tokens, JWE for encrypted ones; a refresh token in the signed format may
// be either, a JWE being a sealed one, enc SealEnc); the header alg is
// exactly the one configured for kind (and enc the configured enc; alg
// "none" and every other alg are refused); the kid names a known key of
// that alg (active or retired); the signature verifies (or the JWE
// decrypts and its tag holds); typ is kind's typ; iss is the issuer; exp
// (required) is not past and nbf and iat are not in the future, with the
// leeway; sub is present; jti and client_id are present in access and
// refresh tokens.
//
// The audience is not checked: the caller knows which it expects (the
// resource, the client) and compares Claims.Audience. Revocation is not
// checked either: that is the store's denylist and allowlist.
//
// Errors wrap ErrMalformed, ErrWrongAlg, ErrUnknownKey, ErrSignature,
// ErrDecrypt, ErrWrongType, ErrWrongIssuer, ErrExpired or ErrNotYetValid.
// They never contain the token or key material. Parse never panics.
func (c *Codec) Parse(raw string, kind Kind, now time.Time) (*Claims, error) {
	return c.parse(raw, kind, now, true)
}

// ParseIDTokenHint verifies an ID token like Parse(raw, ID, now) but
// accepts it after its exp: OpenID Connect RP-Initiated Logout 1.0 §2 has
// the OP accept an id_token_hint "even when the exp time has passed". The
// signature, alg, kid, typ and iss are checked as always; use it only to
// learn whom a logout request is for, never to authenticate.
func (c *Codec) ParseIDTokenHint(raw string, now time.Time) (*Claims, error) {
	return c.parse(raw, ID, now, false)
}

// header is the part of a JOSE header checked before go-jose parses the
// token, to refuse a wrong alg or enc exactly (go-jose lets an absent JWE
// alg through its allowlist) and to report it as ErrWrongAlg.
type header struct {
	Alg string `json:"alg"`
	Enc string `json:"enc"`
	Zip string `json:"zip"`
}

func (c *Codec) parse(raw string, kind Kind, now time.Time, checkTime bool) (cl *Claims, err error) {
	// go-jose is not known to panic on any input, and FuzzParse checks
	// this package does not either; this guard turns a future regression
	// into a refused token rather than a crashed request.
	defer func() {
		if r := recover(); r != nil {
			cl, err = nil, fmt.Errorf("%w: parser failure", ErrMalformed)
		}
	}()
	if err := c.checkKind(kind); err != nil {
		return nil, err
	}
	if raw == "" {
		return nil, fmt.Errorf("%w: empty %s", ErrMalformed, kind)
	}
	if len(raw) > MaxTokenLength {
		return nil, fmt.Errorf("%w: %s longer than %d bytes", ErrMalformed, kind, MaxTokenLength)
	}
	// Access tokens verified before skip the signature check (see
	// verifiedCache); the claims are checked again below.
	cacheable := kind == Access && checkTime
	var sum [32]byte
	if cacheable {
		sum = accessSum(raw)
		if cl, ok := c.cachedAccess(sum); ok {
			if err := c.checkClaims(cl, kind, now, checkTime); err != nil {
				return nil, err
			}
			return cl, nil
		}
	}
	h, err := parseHeader(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s header: %v", ErrMalformed, kind, err)
	}
	var (
		payload []byte
		typ     any
		kid     string
	)
	jwe := kind != ID && c.format == FormatEncrypted
	switch {
	case jwe:
		payload, typ, kid, err = c.decrypt(raw, h, kind, c.enc)
	case kind == Refresh && countDots(raw) == 4:
		// A sealed refresh token, in either refresh format: one sealed
		// before a switch back to signed still opens while its dir key
		// is in the set, as a signed one still verifies after a switch
		// to sealed.
		payload, typ, kid, err = c.decrypt(raw, h, kind, SealEnc)
	default:
		payload, typ, kid, err = c.verify(raw, h, kind)
	}
	if err != nil {
		return nil, err
	}
	if !typMatches(typ, kind.Typ()) {
		return nil, fmt.Errorf("%w: typ %s is not the %s typ %q", ErrWrongType, describeTyp(typ), kind, kind.Typ())
	}
	cl, err = decodeClaims(payload)
	if err != nil {
		return nil, err
	}
	if err := c.checkClaims(cl, kind, now, checkTime); err != nil {
		return nil, err
	}
	if cacheable {
		c.verified.put(sum, verifiedEntry{cl: copyClaims(cl), kid: kid, jwe: jwe}, now)
	}
	return cl, nil
}

func parseHeader(raw string) (header, error) {
	seg, _, ok := strings.Cut(raw, ".")
	if !ok {
		return header{}, errors.New("not a compact JWS or JWE")
	}
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return header{}, errors.New("not base64url")
	}
	var h header
	if err := json.Unmarshal(b, &h); err != nil {
		return header{}, errors.New("not a JSON object of strings")
	}
	return h, nil
}

func (c *Codec) verify(raw string, h header, kind Kind) ([]byte, any, string, error) {
	alg := c.alg
	if kind == ID {
		alg = c.idAlg
	}
	if n := countDots(raw); n != 2 {
		return nil, nil, "", fmt.Errorf("%w: a signed %s has 3 parts, got %d", ErrMalformed, kind, n+1)
	}
	if h.Alg != alg {
		return nil, nil, "", fmt.Errorf("%w: %s alg %q, want %s", ErrWrongAlg, kind, clip(h.Alg), alg)
	}
	obj, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
	if err != nil {
		var ua *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &ua) {
			return nil, nil, "", fmt.Errorf("%w: %s alg %q, want %s", ErrWrongAlg, kind, clip(string(ua.Got)), alg)
		}
		return nil, nil, "", fmt.Errorf("%w: %s: %v", ErrMalformed, kind, err)
	}
	if len(obj.Signatures) != 1 {
		return nil, nil, "", fmt.Errorf("%w: %s has %d signatures", ErrMalformed, kind, len(obj.Signatures))
	}
	hdr := obj.Signatures[0].Protected
	if hdr.JSONWebKey != nil {
		// The key comes from our set by kid, never from the token.
		return nil, nil, "", fmt.Errorf("%w: %s header embeds a jwk", ErrMalformed, kind)
	}
	if hdr.KeyID == "" {
		return nil, nil, "", fmt.Errorf("%w: %s header has no kid", ErrUnknownKey, kind)
	}
	key, keyAlg, ok := c.keys.VerificationKey(hdr.KeyID)
	if !ok {
		return nil, nil, "", fmt.Errorf("%w: %s kid %q is not in the key set", ErrUnknownKey, kind, clip(hdr.KeyID))
	}
	if keyAlg != alg {
		return nil, nil, "", fmt.Errorf("%w: %s kid %q is a %s key, want %s", ErrUnknownKey, kind, clip(hdr.KeyID), keyAlg, alg)
	}
	payload, err := obj.Verify(key)
	if err != nil {
		return nil, nil, "", fmt.Errorf("%w: %s signed by kid %q", ErrSignature, kind, clip(hdr.KeyID))
	}
	return payload, hdr.ExtraHeaders[jose.HeaderType], hdr.KeyID, nil
}

func (c *Codec) decrypt(raw string, h header, kind Kind, enc string) ([]byte, any, string, error) {
	if n := countDots(raw); n != 4 {
		return nil, nil, "", fmt.Errorf("%w: an encrypted %s has 5 parts, got %d", ErrMalformed, kind, n+1)
	}
	if h.Alg != string(jose.DIRECT) || h.Enc != enc {
		return nil, nil, "", fmt.Errorf("%w: %s alg %q enc %q, want dir %s", ErrWrongAlg, kind, clip(h.Alg), clip(h.Enc), enc)
	}
	// RFC 7516 §5.2 step 10: with direct encryption the JWE Encrypted Key
	// MUST be empty. go-jose ignores that part for dir, so without this
	// check a token carrying one would decrypt: one token, many encodings.
	if _, rest, _ := strings.Cut(raw, "."); !strings.HasPrefix(rest, ".") {
		return nil, nil, "", fmt.Errorf("%w: an encrypted %s (alg dir) has a non-empty encrypted key part", ErrMalformed, kind)
	}
	if h.Zip != "" {
		return nil, nil, "", fmt.Errorf("%w: %s is compressed (zip); the issuer never compresses", ErrMalformed, kind)
	}
	obj, err := jose.ParseEncryptedCompact(raw, []jose.KeyAlgorithm{jose.DIRECT}, []jose.ContentEncryption{jose.ContentEncryption(enc)})
	if err != nil {
		return nil, nil, "", fmt.Errorf("%w: %s: %v", ErrMalformed, kind, err)
	}
	kid := obj.Header.KeyID
	if kid == "" {
		return nil, nil, "", fmt.Errorf("%w: %s header has no kid", ErrUnknownKey, kind)
	}
	key, ok := c.keys.DecryptionKey(kid)
	if !ok {
		return nil, nil, "", fmt.Errorf("%w: %s kid %q is not a dir key of the key set", ErrUnknownKey, kind, clip(kid))
	}
	payload, err := obj.Decrypt(key)
	if err != nil {
		return nil, nil, "", fmt.Errorf("%w: %s under kid %q", ErrDecrypt, kind, clip(kid))
	}
	return payload, obj.Header.ExtraHeaders[jose.HeaderType], kid, nil
}

// typMatches compares a typ header with want: media types compare
// case-insensitively and may carry the "application/" prefix (RFC 7515
// §4.1.9; RFC 9068 §2.1 names "application/at+jwt" and "at+jwt").
func typMatches(got any, want string) bool {
	s, ok := got.(string)
	if !ok {
		return false
	}
	if len(s) > len("application/") && strings.EqualFold(s[:len("application/")], "application/") {
		s = s[len("application/"):]
	}
	return strings.EqualFold(s, want)
}

func describeTyp(t any) string {
	s, ok := t.(string)
	if !ok {
		if t == nil {
			return "(absent)"
		}
		return "(not a string)"
	}
	return fmt.Sprintf("%q", clip(s))
}

// clip shortens a header value taken from the token before it goes into
// an error (and so a log line): the input is the client's, of any length.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

func (c *Codec) checkClaims(cl *Claims, kind Kind, now time.Time, checkTime bool) error {
	if cl.Issuer != c.issuer {
		return fmt.Errorf("%w: %s iss is not this issuer", ErrWrongIssuer, kind)
	}
	if cl.Subject == "" {
		return fmt.Errorf("%w: %s has no sub", ErrMalformed, kind)
	}
	if cl.Expiry.IsZero() {
		return fmt.Errorf("%w: %s has no exp", ErrMalformed, kind)
	}
	if cl.IssuedAt.IsZero() {
		return fmt.Errorf("%w: %s has no iat", ErrMalformed, kind)
	}
	if kind != ID {
		if cl.JTI == "" {
			return fmt.Errorf("%w: %s has no jti", ErrMalformed, kind)
		}
		if cl.ClientID == "" {
			return fmt.Errorf("%w: %s has no client_id", ErrMalformed, kind)
		}
	}
	if !checkTime {
		return nil
	}
	// RFC 7519 §4.1.4: the current time MUST be before exp.
	if !now.Before(cl.Expiry.Add(c.leeway)) {
		return fmt.Errorf("%w: %s expired at %s", ErrExpired, kind, cl.Expiry.Format(time.RFC3339))
	}
	// §4.1.5: not before nbf. An iat in the future means a token from a
	// clock far ahead (or forged times): refused too.
	if !cl.NotBefore.IsZero() && now.Add(c.leeway).Before(cl.NotBefore) {
		return fmt.Errorf("%w: %s nbf is %s", ErrNotYetValid, kind, cl.NotBefore.Format(time.RFC3339))
	}
	if now.Add(c.leeway).Before(cl.IssuedAt) {
		return fmt.Errorf("%w: %s iat is %s", ErrNotYetValid, kind, cl.IssuedAt.Format(time.RFC3339))
	}
	return nil
}
