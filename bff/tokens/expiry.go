package tokens

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// maxJWTLen bounds the access tokens AccessExpiry parses: larger ones
// fall back to expires_in rather than cost a large decode on every
// refresh.
const maxJWTLen = 64 << 10

// maxExpiresIn keeps now+expires_in from overflowing time.Duration (a
// provider's absurd expires_in must not wrap to an expiry in the past).
const maxExpiresIn = int64(math.MaxInt64 / int64(time.Second))

// AccessExpiry is when tok's access token expires on the gateway's clock
// now: the earlier of now+expires_in (RFC 6749 §5.1) and, when the access
// token is a JWT, its exp claim (RFC 7519 §4.1.4) when that is after now. Zero means unknown:
// the token is used until an upstream refuses it.
//
// now+expires_in alone comes out late whenever the clock moved between
// the provider issuing the token and the gateway reading the response (a
// slow token endpoint, or a test clock moved while a refresh was in
// flight), and the gateway would keep sending a token its upstreams
// already refuse. The exp claim is absolute, so it does not drift.
//
// x/oauth2 sets Token.Expiry from expires_in on the system clock, which an
// injected clock does not follow; AccessExpiry works from ExpiresIn and
// only falls back to Expiry (carried over to now) when ExpiresIn is unset.
func AccessExpiry(tok *oauth2.Token, now time.Time) time.Time {
	var exp time.Time
	switch {
	case tok == nil:
		return time.Time{}
	case tok.ExpiresIn > 0:
		exp = now.Add(time.Duration(min(tok.ExpiresIn, maxExpiresIn)) * time.Second)
	case !tok.Expiry.IsZero():
		exp = now.Add(time.Until(tok.Expiry))
	}
	// A claim at or before now is not believed: the provider's clock is
	// behind ours, or it wrote a lifetime where a date belongs. Using it
	// would make every request refresh (and rotate) at the provider;
	// expires_in, counted on our clock, is the safer reading then.
	if claim, ok := jwtExpiry(tok.AccessToken); ok && claim.After(now) && (exp.IsZero() || claim.Before(exp)) {
		exp = claim
	}
	return exp
}

// jwtExpiry reads the exp claim of an access token in the JWS compact
// serialisation (RFC 7515 §7.1: three base64url parts, the second a JSON
// object of claims). ok is false for anything else: an encrypted JWT
// (JWE, five parts, whose claims the gateway cannot read), an opaque
// token, or claims without a numeric exp.
//
// The signature is not checked, on purpose: the token comes from the
// provider's token endpoint over the gateway's own connection, not from a
// client, and exp only makes the gateway refresh earlier than expires_in
// says. It is never a trust decision: the upstreams verify the tokens
// they receive.
func jwtExpiry(token string) (time.Time, bool) {
	if len(token) > maxJWTLen || strings.Count(token, ".") != 2 {
		return time.Time{}, false
	}
	header, rest, _ := strings.Cut(token, ".")
	payload, sig, _ := strings.Cut(rest, ".")
	// The signature is empty only for alg "none" (RFC 7519 §6.1), which
	// is still a JWT whose claims say when it expires.
	if !isJSONObject(header) || !isB64URL(sig) {
		return time.Time{}, false
	}
	b, err := decodeB64URL(payload)
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp json.RawMessage `json:"exp"`
	}
	if err := json.Unmarshal(b, &claims); err != nil {
		return time.Time{}, false
	}
	// RFC 7519 §2 NumericDate: a JSON number of seconds, possibly with a
	// fraction. A string (even "1700000000") is not one.
	raw := claims.Exp
	if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return time.Time{}, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	// Before 1970 or after 9999 is no expiry a provider means.
	if err != nil || f <= 0 || f >= 253402300800 {
		return time.Time{}, false
	}
	// Truncating a fraction moves the expiry earlier, the safe side.
	return time.Unix(int64(f), 0), true
}

func decodeB64URL(s string) ([]byte, error) {
	// RFC 7515 §2 base64url is unpadded; some encoders pad anyway.
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

func isB64URL(s string) bool {
	_, err := decodeB64URL(s)
	return err == nil
}

func isJSONObject(part string) bool {
	b, err := decodeB64URL(part)
	if err != nil {
		return false
	}
	b = bytes.TrimSpace(b)
	return len(b) > 0 && b[0] == '{' && json.Valid(b)
}
