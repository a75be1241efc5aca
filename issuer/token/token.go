package token

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/bffgate/bffgate/issuer/keys"
)

// Kind is the kind of token: it selects the header typ, the claims written
// and the checks Parse makes.
type Kind int

const (
	// Access is an OAuth 2.0 access token in the JWT profile of RFC 9068
	// (typ "at+jwt").
	Access Kind = iota + 1
	// Refresh is a refresh token (typ "rt+jwt"; it is also on the store's
	// allowlist, which is what makes it revocable).
	Refresh
	// ID is an OpenID Connect ID token (OpenID Connect Core §2; typ "JWT"),
	// always signed with an asymmetric alg so relying parties verify it
	// with the published JWK set.
	ID
)

func (k Kind) String() string {
	switch k {
	case Access:
		return "access token"
	case Refresh:
		return "refresh token"
	case ID:
		return "ID token"
	default:
		return fmt.Sprintf("token.Kind(%d)", int(k))
	}
}

// Typ returns the JWS/JWE "typ" header of the kind (RFC 9068 §2.1 for
// access tokens; RFC 8725 §3.11 explicit typing for refresh tokens).
func (k Kind) Typ() string {
	switch k {
	case Access:
		return TypAccess
	case Refresh:
		return TypRefresh
	case ID:
		return TypID
	}
	return ""
}

// Header typ values.
const (
	TypAccess  = "at+jwt"
	TypRefresh = "rt+jwt"
	TypID      = "JWT"
)

// Format is the wire format of access and refresh tokens.
type Format string

const (
	// FormatSigned: a compact JWS (RFC 7515) with the configured alg.
	FormatSigned Format = "signed"
	// FormatEncrypted: a compact JWE (RFC 7516) with alg "dir" and the key
	// set's enc (A128CBC-HS256 or A256GCM), as ForgeRock AM's client-side
	// tokens: the claims are confidential to the issuer.
	FormatEncrypted Format = "encrypted"
)

// RefreshFormat is the wire format of refresh tokens when access tokens
// are signed.
type RefreshFormat string

const (
	// RefreshSigned: refresh tokens are signed like access tokens
	// (ForgeRock AM's all-signed client-side tokens).
	RefreshSigned RefreshFormat = "signed"
	// RefreshSealed: refresh tokens are a compact JWE, alg "dir" and enc
	// SealEnc under the key set's dir key, as in the encrypted format. Only
	// the issuer reads a refresh token, so nothing needs to verify a
	// signature on it: sealing costs an AES-GCM pass instead of a
	// signature (an RSA one costs milliseconds), and the token is opaque
	// to the client.
	RefreshSealed RefreshFormat = "sealed"
)

// SealEnc is the JWE enc of sealed refresh tokens.
const SealEnc = "A256GCM"

// Claims are the claims of any kind of token; Mint writes those that
// belong to the kind, Parse fills those present.
type Claims struct {
	Issuer   string    // iss
	Subject  string    // sub
	Audience []string  // aud (one value is written as a string)
	ClientID string    // client_id (access, refresh); azp (ID token)
	Scope    string    // scope (access, refresh), space-delimited
	JTI      string    // jti; Mint generates one for access and refresh tokens when empty
	IssuedAt time.Time // iat; Mint uses Config.Now when zero
	// NotBefore is nbf; Mint uses IssuedAt when zero (access, refresh).
	NotBefore time.Time
	Expiry    time.Time // exp; required
	AuthTime  time.Time // auth_time: when the user authenticated (OIDC Core §2)
	SID       string    // sid: the issuer login session (OIDC Front/Back-Channel Logout)
	// GrantID is grant_id: the grant every token of one authorization
	// shares, so that revoking the grant revokes them all.
	GrantID string
	// GrantType is gty (access and refresh tokens): the issuer sets it to
	// "client_credentials" on a token a client got for itself (RFC 6749
	// §4.4), whose sub names the client and no user. The claim name is
	// Auth0's; RFC 9068 defines none.
	GrantType string
	// Nonce is the ID token's nonce (OIDC Core §3.1.2.1).
	Nonce string
	// AccessTokenHash is the ID token's at_hash (OIDC Core §3.1.3.6); see
	// AccessTokenHash.
	AccessTokenHash string
	// Extra holds further claims (user claims of an ID token: name, email,
	// ...). Registered names (iss, sub, aud, ...) are refused by Mint; Parse
	// puts every claim it does not map to a field here.
	Extra map[string]any
}

// Config configures a Codec.
type Config struct {
	// Issuer is the iss of every token (the issuer identifier of OpenID
	// Connect Discovery §3, an https URL). Required.
	Issuer string
	// Keys is the key set. Required; it must hold an active key for Alg
	// (when Format is signed), for IDTokenAlg, and a dir key when Format
	// is encrypted.
	Keys *keys.Set
	// Format of access and refresh tokens; "" means FormatSigned. ID tokens
	// are always signed.
	Format Format
	// Alg signs access and refresh tokens when Format is signed; "" means
	// RS256.
	Alg string
	// RefreshFormat is the format of refresh tokens when Format is
	// signed; "" means RefreshSigned. RefreshSealed needs a key set with
	// a dir key for SealEnc (keys.Config.Encryption A256GCM). Parse
	// accepts refresh tokens of both formats whatever this says, so that
	// switching it keeps the refresh tokens already issued working (a
	// sealed one as long as its dir key is in the set).
	RefreshFormat RefreshFormat
	// IDTokenAlg signs ID tokens; "" means RS256. Only RS, PS and ES algs:
	// a relying party verifies ID tokens with the public JWK set.
	IDTokenAlg string
	// Leeway is the clock skew accepted on exp, nbf and iat; 0 means 5s.
	Leeway time.Duration
	// Now is the clock Mint uses for a zero IssuedAt; nil means time.Now.
	Now func() time.Time
}

// DefaultLeeway is the clock skew accepted when Config.Leeway is 0.
const DefaultLeeway = 5 * time.Second

// MaxTokenLength bounds the tokens Parse reads; longer input is refused
// before any decoding.
const MaxTokenLength = 64 << 10

// Codec mints and parses the issuer's tokens. It is safe for concurrent
// use. It follows key rotation (keys.Set.Reload) by itself: the next Mint
// signs with the new active key.
type Codec struct {
	issuer  string
	keys    *keys.Set
	format  Format
	refresh RefreshFormat
	alg     string
	idAlg   string
	enc     string
	leeway  time.Duration
	now     func() time.Time

	// One cached signer or encrypter per kind, replaced when the active
	// kid changes.
	signers    [3]atomic.Pointer[cachedSigner]
	encrypters [2]atomic.Pointer[cachedEncrypter]
	// verified holds access tokens verified before (verified.go).
	verified verifiedCache
}

type cachedSigner struct {
	kid string
	s   jose.Signer
}

type cachedEncrypter struct {
	kid string
	e   jose.Encrypter
}

// New returns a Codec for cfg; the error names the field at fault.
func New(cfg Config) (*Codec, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("token: Config.Issuer is required")
	}
	if cfg.Keys == nil {
		return nil, errors.New("token: Config.Keys is required")
	}
	if cfg.Format == "" {
		cfg.Format = FormatSigned
	}
	if cfg.Format != FormatSigned && cfg.Format != FormatEncrypted {
		return nil, fmt.Errorf("token: Config.Format %q is not %q or %q", cfg.Format, FormatSigned, FormatEncrypted)
	}
	if cfg.RefreshFormat == "" {
		cfg.RefreshFormat = RefreshSigned
	}
	switch {
	case cfg.RefreshFormat != RefreshSigned && cfg.RefreshFormat != RefreshSealed:
		return nil, fmt.Errorf("token: Config.RefreshFormat %q is not %q or %q", cfg.RefreshFormat, RefreshSigned, RefreshSealed)
	case cfg.RefreshFormat == RefreshSealed && cfg.Format != FormatSigned:
		return nil, fmt.Errorf("token: Config.RefreshFormat %q needs Format %q: in the %s format refresh tokens are already encrypted", cfg.RefreshFormat, FormatSigned, cfg.Format)
	}
	if cfg.Alg == "" {
		cfg.Alg = "RS256"
	}
	if cfg.IDTokenAlg == "" {
		cfg.IDTokenAlg = "RS256"
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.Leeway < 0 {
		return nil, fmt.Errorf("token: Config.Leeway is negative (%s)", cfg.Leeway)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if !keys.IsAsymmetric(cfg.IDTokenAlg) {
		return nil, fmt.Errorf("token: Config.IDTokenAlg %q: ID tokens need an RS, PS or ES alg (relying parties verify them with the public JWK set)", cfg.IDTokenAlg)
	}
	if _, ok := cfg.Keys.ActiveKID(cfg.IDTokenAlg); !ok {
		return nil, fmt.Errorf("token: Config.IDTokenAlg %s: the key set has no active %s key (add it to keys.Config.Algorithms)", cfg.IDTokenAlg, cfg.IDTokenAlg)
	}
	c := &Codec{
		issuer: cfg.Issuer, keys: cfg.Keys, format: cfg.Format, refresh: cfg.RefreshFormat,
		alg: cfg.Alg, idAlg: cfg.IDTokenAlg, leeway: cfg.Leeway, now: cfg.Now,
	}
	switch cfg.Format {
	case FormatSigned:
		if !keys.IsSigningAlg(cfg.Alg) {
			return nil, fmt.Errorf("token: Config.Alg %q is not supported (supported: %v)", cfg.Alg, keys.SigningAlgorithms())
		}
		if _, ok := cfg.Keys.ActiveKID(cfg.Alg); !ok {
			return nil, fmt.Errorf("token: Config.Alg %s: the key set has no active %s key (add it to keys.Config.Algorithms)", cfg.Alg, cfg.Alg)
		}
		if cfg.RefreshFormat == RefreshSealed {
			_, _, enc, err := cfg.Keys.Encryption()
			if err != nil {
				return nil, fmt.Errorf("token: Config.RefreshFormat is sealed but the key set has no dir key (set keys.Config.Encryption to %s): %w", SealEnc, err)
			}
			if enc != SealEnc {
				return nil, fmt.Errorf("token: Config.RefreshFormat is sealed: the key set's enc is %s, sealed refresh tokens use %s", enc, SealEnc)
			}
			c.enc = enc
		}
	case FormatEncrypted:
		_, _, enc, err := cfg.Keys.Encryption()
		if err != nil {
			return nil, fmt.Errorf("token: Config.Format is encrypted but the key set has no JWE key (set keys.Config.Encryption): %w", err)
		}
		c.enc = enc
	}
	return c, nil
}

// Issuer returns the configured issuer identifier.
func (c *Codec) Issuer() string { return c.issuer }

// Format returns the format of access and refresh tokens.
func (c *Codec) Format() Format { return c.format }

// RefreshFormat returns the format of refresh tokens in the signed
// format (RefreshSigned in the encrypted one, where it does not apply).
func (c *Codec) RefreshFormat() RefreshFormat { return c.refresh }

// FormatOf names the format of kind's tokens as Mint makes them: "signed",
// "encrypted" or "sealed" (a refresh token sealed while access tokens are
// signed), for metrics and logs.
func (c *Codec) FormatOf(kind Kind) string {
	switch {
	case kind == ID:
		return string(FormatSigned)
	case kind == Refresh && c.format == FormatSigned && c.refresh == RefreshSealed:
		return string(RefreshSealed)
	}
	return string(c.format)
}

// Algorithm returns the JWS alg of kind's tokens, or "dir" for access and
// refresh tokens in the encrypted format and sealed refresh tokens.
func (c *Codec) Algorithm(kind Kind) string {
	if kind == ID {
		return c.idAlg
	}
	if c.encrypted(kind) {
		return keys.AlgDir
	}
	return c.alg
}

// Encryption returns the JWE enc of the encrypted format, or of sealed
// refresh tokens ("" when every token is signed).
func (c *Codec) Encryption() string { return c.enc }

// NewID returns a random identifier with 128 bits from crypto/rand, for
// jti and grant ids.
func NewID() string { return rand.Text() }

// AccessTokenHash returns the at_hash of an access token for an ID token
// signed with alg (OpenID Connect Core §3.1.3.6): the base64url encoding of
// the left-most half of the hash of the token's ASCII octets, where the
// hash is the one of alg (SHA-256 for RS256, ES256, PS256, HS256, ...). It
// returns "" for an unknown alg.
func AccessTokenHash(accessToken, alg string) string {
	hf, ok := keys.HashFor(alg)
	if !ok || !hf.Available() {
		return ""
	}
	h := hf.New()
	h.Write([]byte(accessToken))
	sum := h.Sum(nil)
	return base64.RawURLEncoding.EncodeToString(sum[:len(sum)/2])
}

func (c *Codec) checkKind(kind Kind) error {
	if kind != Access && kind != Refresh && kind != ID {
		return fmt.Errorf("token: unknown kind %d", int(kind))
	}
	return nil
}

// encrypted reports whether Mint makes kind's tokens as JWEs.
func (c *Codec) encrypted(kind Kind) bool {
	switch {
	case kind == ID:
		return false
	case c.format == FormatEncrypted:
		return true
	}
	return kind == Refresh && c.refresh == RefreshSealed
}

// countDots counts '.' in s (a compact JWS has 2, a JWE 4).
func countDots(s string) int { return strings.Count(s, ".") }
