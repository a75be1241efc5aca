package token

import (
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
)

// Mint returns the compact serialization of a kind token with cl's claims.
//
// Access and refresh tokens are signed with Config.Alg (typ at+jwt, rt+jwt)
// or, in the encrypted format, a JWE with alg dir under the active dir key
// (same typ, payload the claims, no signature inside). ID tokens are signed
// with Config.IDTokenAlg (typ JWT). The header carries the kid of the key
// used.
//
// Mint fills in: Issuer (must be empty or equal to Config.Issuer),
// IssuedAt (Config.Now when zero), NotBefore (IssuedAt when zero; access
// and refresh only), JTI (NewID when empty; access and refresh only: set it
// yourself when you need to store it). It refuses (ErrInvalidClaims) a
// missing Subject or Expiry, an Expiry not after IssuedAt, a missing
// Audience (access, ID) or ClientID (access, refresh), and reserved names
// in Extra.
func (c *Codec) Mint(kind Kind, cl Claims) (string, error) {
	if err := c.checkKind(kind); err != nil {
		return "", err
	}
	if err := c.fill(kind, &cl); err != nil {
		return "", err
	}
	payload, err := encodeClaims(kind, &cl)
	if err != nil {
		return "", err
	}
	if c.encrypted(kind) {
		return c.encrypt(kind, payload)
	}
	return c.sign(kind, payload)
}

func (c *Codec) fill(kind Kind, cl *Claims) error {
	switch {
	case cl.Issuer == "":
		cl.Issuer = c.issuer
	case cl.Issuer != c.issuer:
		return fmt.Errorf("%w: Issuer %q is not the configured issuer", ErrInvalidClaims, cl.Issuer)
	}
	if cl.Subject == "" {
		return fmt.Errorf("%w: Subject is required", ErrInvalidClaims)
	}
	if cl.Expiry.IsZero() {
		return fmt.Errorf("%w: Expiry is required", ErrInvalidClaims)
	}
	if cl.IssuedAt.IsZero() {
		cl.IssuedAt = c.now()
	}
	if !cl.Expiry.After(cl.IssuedAt) {
		return fmt.Errorf("%w: Expiry (%s) is not after IssuedAt (%s)", ErrInvalidClaims, cl.Expiry.UTC().Format("2006-01-02T15:04:05Z"), cl.IssuedAt.UTC().Format("2006-01-02T15:04:05Z"))
	}
	if kind != Refresh && len(cl.Audience) == 0 {
		return fmt.Errorf("%w: Audience is required in an %s", ErrInvalidClaims, kind)
	}
	for _, a := range cl.Audience {
		if a == "" {
			return fmt.Errorf("%w: Audience holds an empty value", ErrInvalidClaims)
		}
	}
	if kind == ID {
		return nil
	}
	if cl.ClientID == "" {
		return fmt.Errorf("%w: ClientID is required in an %s (RFC 9068 §2.2)", ErrInvalidClaims, kind)
	}
	if cl.NotBefore.IsZero() {
		cl.NotBefore = cl.IssuedAt
	}
	if cl.JTI == "" {
		cl.JTI = NewID()
	}
	return nil
}

func (c *Codec) signer(kind Kind) (jose.Signer, error) {
	alg := c.alg
	if kind == ID {
		alg = c.idAlg
	}
	slot := &c.signers[kind-1]
	kid, ok := c.keys.ActiveKID(alg)
	if !ok {
		return nil, fmt.Errorf("token: no active %s key", alg)
	}
	if cs := slot.Load(); cs != nil && cs.kid == kid {
		return cs.s, nil
	}
	s, kid, err := c.keys.Signer(alg, (&jose.SignerOptions{}).WithType(jose.ContentType(kind.Typ())))
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	slot.Store(&cachedSigner{kid: kid, s: s})
	return s, nil
}

func (c *Codec) sign(kind Kind, payload []byte) (string, error) {
	s, err := c.signer(kind)
	if err != nil {
		return "", err
	}
	jws, err := s.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("token: sign %s: %w", kind, err)
	}
	return jws.CompactSerialize()
}

func (c *Codec) encrypter(kind Kind) (jose.Encrypter, error) {
	slot := &c.encrypters[kind-1]
	kid, ok := c.keys.ActiveKID("dir")
	if !ok {
		return nil, fmt.Errorf("token: no active dir key")
	}
	if ce := slot.Load(); ce != nil && ce.kid == kid {
		return ce.e, nil
	}
	kid, key, enc, err := c.keys.Encryption()
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	e, err := jose.NewEncrypter(jose.ContentEncryption(enc),
		jose.Recipient{Algorithm: jose.DIRECT, Key: key, KeyID: kid},
		(&jose.EncrypterOptions{}).WithType(jose.ContentType(kind.Typ())))
	if err != nil {
		return nil, fmt.Errorf("token: encrypter for dir key %s: %w", kid, err)
	}
	slot.Store(&cachedEncrypter{kid: kid, e: e})
	return e, nil
}

func (c *Codec) encrypt(kind Kind, payload []byte) (string, error) {
	e, err := c.encrypter(kind)
	if err != nil {
		return "", err
	}
	jwe, err := e.Encrypt(payload)
	if err != nil {
		return "", fmt.Errorf("token: encrypt %s: %w", kind, err)
	}
	return jwe.CompactSerialize()
}
