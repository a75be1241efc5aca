package keys

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/bffgate/bffgate/issuer/storage"
)

// MinRSABits is the smallest RSA modulus accepted for RS* and PS* (RFC
// 7518 §3.3: "A key of size 2048 bits or larger MUST be used").
const MinRSABits = 2048

// maxKeyFileSize bounds what Open reads from a key file: a 16384-bit RSA
// key in PEM is about 13 KB; anything far larger is not a key.
const maxKeyFileSize = 1 << 20

// material is one decoded key: priv is *rsa.PrivateKey, *ecdsa.PrivateKey
// or []byte (HMAC secret or dir key).
type material struct {
	alg  string
	priv any
}

// public returns what verifies: the public key, or the secret itself for
// HS (there is no public half).
func (m material) public() any {
	switch k := m.priv.(type) {
	case *rsa.PrivateKey:
		return &k.PublicKey
	case *ecdsa.PrivateKey:
		return &k.PublicKey
	default:
		return m.priv
	}
}

func (m material) symmetric() ([]byte, bool) {
	b, ok := m.priv.([]byte)
	return b, ok
}

// validate checks that priv fits alg: RSA >= 2048 bits and consistent, EC
// on the alg's curve, HS secrets at least the hash size (RFC 7518 §3.2),
// dir keys of a size some enc uses (exact size is checked against the
// configured enc by Open).
func (m material) validate() error {
	if err := checkAlg(m.alg); err != nil {
		return err
	}
	if m.alg == AlgDir {
		b, ok := m.priv.([]byte)
		if !ok {
			return fmt.Errorf("%w: a dir key is a symmetric key, got %s", ErrKeyMismatch, typeName(m.priv))
		}
		switch len(b) {
		case 16, 24, 32, 48, 64:
			return nil
		}
		return fmt.Errorf("%w: a dir key is 16, 24, 32, 48 or 64 bytes (by enc), got %d", ErrWeakKey, len(b))
	}
	info := signingAlgs[m.alg]
	switch info.family {
	case famHMAC:
		b, ok := m.priv.([]byte)
		if !ok {
			return fmt.Errorf("%w: %s needs a symmetric secret, got %s", ErrKeyMismatch, m.alg, typeName(m.priv))
		}
		if len(b) < info.hash.Size() {
			return fmt.Errorf("%w: %s needs a secret of at least %d bytes (RFC 7518 §3.2), got %d", ErrWeakKey, m.alg, info.hash.Size(), len(b))
		}
	case famRSA:
		k, ok := m.priv.(*rsa.PrivateKey)
		if !ok {
			return fmt.Errorf("%w: %s needs an RSA private key, got %s", ErrKeyMismatch, m.alg, typeName(m.priv))
		}
		if bits := k.N.BitLen(); bits < MinRSABits {
			return fmt.Errorf("%w: %s needs an RSA key of at least %d bits (RFC 7518 §3.3), got %d", ErrWeakKey, m.alg, MinRSABits, bits)
		}
		if err := k.Validate(); err != nil {
			return fmt.Errorf("%w: RSA key is inconsistent: %v", ErrKeyMismatch, err)
		}
	case famEC:
		k, ok := m.priv.(*ecdsa.PrivateKey)
		if !ok {
			return fmt.Errorf("%w: %s needs an EC private key on %s, got %s", ErrKeyMismatch, m.alg, info.curve.Params().Name, typeName(m.priv))
		}
		if k.Curve != info.curve {
			return fmt.Errorf("%w: %s needs curve %s (RFC 7518 §3.4), the key is on %s", ErrKeyMismatch, m.alg, info.curve.Params().Name, k.Curve.Params().Name)
		}
	}
	return nil
}

// kid returns the RFC 7638 thumbprint (SHA-256, base64url) of an
// asymmetric key, or a fresh random id for a symmetric one: the
// thumbprint of a secret is a hash of the secret, which has no business in
// a token header.
func (m material) kid() (string, error) {
	if _, ok := m.symmetric(); ok {
		return randomKID(), nil
	}
	jwk := jose.JSONWebKey{Key: m.public()}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("keys: thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// sameKey reports whether two materials hold the same key (constant time
// for secrets).
func (m material) sameKey(o material) bool {
	switch a := m.priv.(type) {
	case []byte:
		b, ok := o.priv.([]byte)
		return ok && len(a) == len(b) && subtle.ConstantTimeCompare(a, b) == 1
	case *rsa.PrivateKey:
		b, ok := o.priv.(*rsa.PrivateKey)
		return ok && a.PublicKey.Equal(&b.PublicKey)
	case *ecdsa.PrivateKey:
		b, ok := o.priv.(*ecdsa.PrivateKey)
		return ok && a.PublicKey.Equal(&b.PublicKey)
	}
	return false
}

func randomKID() string { return strings.ToLower(rand.Text()) }

// generate makes a new key for alg from crypto/rand. size is the RSA
// modulus in bits, or the dir key in bytes; 0 means the default.
func generate(alg string, size int) (material, error) {
	if err := checkAlg(alg); err != nil {
		return material{}, err
	}
	if alg == AlgDir {
		if size == 0 {
			size = 32
		}
		b := make([]byte, size)
		_, _ = rand.Read(b) // never fails (crypto/rand, Go 1.24+)
		return material{alg, b}, nil
	}
	info := signingAlgs[alg]
	switch info.family {
	case famHMAC:
		b := make([]byte, info.hash.Size())
		_, _ = rand.Read(b)
		return material{alg, b}, nil
	case famRSA:
		if size == 0 {
			size = MinRSABits
		}
		k, err := rsa.GenerateKey(rand.Reader, size)
		if err != nil {
			return material{}, fmt.Errorf("keys: generate %s: %w", alg, err)
		}
		return material{alg, k}, nil
	default:
		k, err := ecdsa.GenerateKey(info.curve, rand.Reader)
		if err != nil {
			return material{}, fmt.Errorf("keys: generate %s: %w", alg, err)
		}
		return material{alg, k}, nil
	}
}

// toStored encodes m as a storage.Key (private JWK JSON).
func (m material) toStored(kid string, active bool, created time.Time) (storage.Key, error) {
	jwk := jose.JSONWebKey{Key: m.priv, KeyID: kid, Algorithm: m.alg, Use: useFor(m.alg)}
	b, err := jwk.MarshalJSON()
	if err != nil {
		return storage.Key{}, fmt.Errorf("keys: encode %s key %s: %w", m.alg, kid, err)
	}
	return storage.Key{ID: kid, Alg: m.alg, Use: useFor(m.alg), Private: b, Active: active, Created: created.UTC()}, nil
}

// fromStored decodes and validates a stored key.
func fromStored(k storage.Key) (material, error) {
	if k.ID == "" {
		return material{}, fmt.Errorf("%w: a %s key has no kid", ErrCorruptStore, k.Alg)
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(k.Private); err != nil {
		return material{}, fmt.Errorf("%w: kid %s: decode JWK: %v", ErrCorruptStore, k.ID, err)
	}
	m := material{alg: k.Alg, priv: normalize(jwk.Key)}
	if err := m.validate(); err != nil {
		return material{}, fmt.Errorf("%w: kid %s: %w", ErrCorruptStore, k.ID, err)
	}
	if rk, ok := m.priv.(*rsa.PrivateKey); ok {
		// go-jose's JWK decoding fills Dp, Dq and Qinv but not the cache
		// crypto/rsa signs with, which every signature would then rebuild
		// and check again (about a tenth of an RS256 signature's CPU in
		// BenchmarkRefreshGrant's profile). Once, here, before the key is
		// shared.
		rk.Precompute()
	}
	return m, nil
}

// normalize turns the value forms go-jose and x509 produce into the ones
// this package uses (pointer keys, []byte secrets).
func normalize(k any) any {
	switch v := k.(type) {
	case rsa.PrivateKey:
		return &v
	case ecdsa.PrivateKey:
		return &v
	}
	return k
}

// readKeyFile decodes one key file. Accepted forms:
//   - a JWK (RFC 7517) JSON object with the private part (kty RSA, EC or oct);
//   - PEM: "RSA PRIVATE KEY" (PKCS #1), "PRIVATE KEY" (PKCS #8),
//     "EC PRIVATE KEY" (SEC 1);
//   - for HS and dir: the raw secret in base64 (standard or URL alphabet,
//     padded or not), alone in the file.
//
// The returned kid is the JWK's "kid" when present, the JWK's alg its "alg".
func readKeyFile(path string) (priv any, jwkKID, jwkAlg string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", "", err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, "", "", err
	}
	if len(raw) > maxKeyFileSize {
		return nil, "", "", fmt.Errorf("file is larger than %d bytes; it is not a key", maxKeyFileSize)
	}
	data := bytes.TrimSpace(raw)
	if len(data) == 0 {
		return nil, "", "", fmt.Errorf("file is empty")
	}
	switch {
	case data[0] == '{':
		var jwk jose.JSONWebKey
		if err := json.Unmarshal(data, &jwk); err != nil {
			return nil, "", "", fmt.Errorf("not a valid JWK: %v", err)
		}
		if !jwk.Valid() {
			return nil, "", "", fmt.Errorf("JWK is not valid")
		}
		if jwk.IsPublic() {
			return nil, "", "", fmt.Errorf("%w: the JWK holds only a public key; a signing key needs its private part", ErrKeyMismatch)
		}
		return normalize(jwk.Key), jwk.KeyID, jwk.Algorithm, nil
	case bytes.HasPrefix(data, []byte("-----BEGIN")):
		p, err := parsePEM(data)
		return p, "", "", err
	default:
		s := strings.TrimRight(string(data), "=")
		for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
			if b, err := enc.DecodeString(s); err == nil {
				return b, "", "", nil
			}
		}
		return nil, "", "", fmt.Errorf("neither a JWK, a PEM private key, nor a base64 secret")
	}
}

func parsePEM(data []byte) (any, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("PEM block could not be decoded")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("PEM file holds more than one block; put one key per file")
	}
	if _, encrypted := block.Headers["Proc-Type"]; encrypted {
		return nil, fmt.Errorf("encrypted PEM is not supported; decrypt the key (openssl pkey -in KEY -out PLAIN)")
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PKCS #1 RSA key: %v", err)
		}
		return k, nil
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("SEC 1 EC key: %v", err)
		}
		return k, nil
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PKCS #8 key: %v", err)
		}
		if _, ok := k.(ed25519.PrivateKey); ok {
			return nil, fmt.Errorf("%w: Ed25519 (EdDSA) keys are not supported; use an RSA or EC key", ErrUnsupportedAlg)
		}
		return k, nil
	case "ENCRYPTED PRIVATE KEY":
		return nil, fmt.Errorf("encrypted PKCS #8 is not supported; decrypt the key (openssl pkey -in KEY -out PLAIN)")
	case "PUBLIC KEY", "RSA PUBLIC KEY", "CERTIFICATE":
		return nil, fmt.Errorf("%w: PEM block %q holds no private key; a signing key needs the private key", ErrKeyMismatch, block.Type)
	default:
		return nil, fmt.Errorf("unsupported PEM block %q (want RSA PRIVATE KEY, EC PRIVATE KEY or PRIVATE KEY)", block.Type)
	}
}

func typeName(k any) string {
	switch v := k.(type) {
	case []byte:
		return "a symmetric secret"
	case *rsa.PrivateKey:
		return "an RSA key"
	case *rsa.PublicKey:
		return "an RSA public key"
	case *ecdsa.PrivateKey:
		return "an EC key on " + curveName(v.Curve)
	case *ecdsa.PublicKey:
		return "an EC public key"
	case ed25519.PrivateKey, ed25519.PublicKey:
		return "an Ed25519 key"
	case nil:
		return "no key"
	default:
		return fmt.Sprintf("%T", k)
	}
}

func curveName(c elliptic.Curve) string {
	if c == nil || c.Params() == nil {
		return "an unknown curve"
	}
	return c.Params().Name
}
