package keys

import (
	"crypto"
	"crypto/elliptic"
	"fmt"
	"slices"

	jose "github.com/go-jose/go-jose/v4"
)

// AlgDir is the storage.Key Alg of a JWE direct-encryption key (RFC 7518
// §4.5): the content encryption key itself.
const AlgDir = "dir"

// Key uses, as in the JWK "use" member (RFC 7517 §4.2).
const (
	UseSig = "sig"
	UseEnc = "enc"
)

type family int

const (
	famHMAC family = iota + 1
	famRSA         // RS* (PKCS #1 v1.5) and PS* (PSS)
	famEC
	famDir
)

type algInfo struct {
	family family
	hash   crypto.Hash    // for HS: minimum secret size is hash.Size()
	curve  elliptic.Curve // for ES
}

var signingAlgs = map[string]algInfo{
	"HS256": {famHMAC, crypto.SHA256, nil},
	"HS384": {famHMAC, crypto.SHA384, nil},
	"HS512": {famHMAC, crypto.SHA512, nil},
	"RS256": {famRSA, crypto.SHA256, nil},
	"RS384": {famRSA, crypto.SHA384, nil},
	"RS512": {famRSA, crypto.SHA512, nil},
	"PS256": {famRSA, crypto.SHA256, nil},
	"PS384": {famRSA, crypto.SHA384, nil},
	"PS512": {famRSA, crypto.SHA512, nil},
	"ES256": {famEC, crypto.SHA256, elliptic.P256()},
	"ES384": {famEC, crypto.SHA384, elliptic.P384()},
	"ES512": {famEC, crypto.SHA512, elliptic.P521()},
}

// encKeySize is the exact dir key size of each JWE enc (RFC 7518 §5.2.3 to
// §5.2.5: the CBC-HMAC key is MAC key plus AES key; §5.3: the GCM key).
var encKeySize = map[string]int{
	"A128CBC-HS256": 32,
	"A192CBC-HS384": 48,
	"A256CBC-HS512": 64,
	"A128GCM":       16,
	"A192GCM":       24,
	"A256GCM":       32,
}

// SigningAlgorithms returns every JWS alg the package supports, sorted.
func SigningAlgorithms() []string {
	out := make([]string, 0, len(signingAlgs))
	for a := range signingAlgs {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

// IsAsymmetric reports whether alg is a supported RS, PS or ES alg: one
// whose verification key can be published in the JWK set.
func IsAsymmetric(alg string) bool {
	info, ok := signingAlgs[alg]
	return ok && (info.family == famRSA || info.family == famEC)
}

// IsSigningAlg reports whether alg is a supported JWS alg.
func IsSigningAlg(alg string) bool {
	_, ok := signingAlgs[alg]
	return ok
}

// EncKeySize returns the dir key size of a supported JWE enc.
func EncKeySize(enc string) (int, bool) {
	n, ok := encKeySize[enc]
	return n, ok
}

// HashFor returns the hash function of a JWS alg (SHA-256 for *256, ...),
// used e.g. for at_hash (OpenID Connect Core §3.1.3.6).
func HashFor(alg string) (crypto.Hash, bool) {
	info, ok := signingAlgs[alg]
	if !ok {
		return 0, false
	}
	return info.hash, true
}

func checkAlg(alg string) error {
	if alg == AlgDir || IsSigningAlg(alg) {
		return nil
	}
	return fmt.Errorf("%w %q (supported: %v and %q)", ErrUnsupportedAlg, alg, SigningAlgorithms(), AlgDir)
}

func useFor(alg string) string {
	if alg == AlgDir {
		return UseEnc
	}
	return UseSig
}

// joseAlg is alg as a go-jose signature algorithm.
func joseAlg(alg string) jose.SignatureAlgorithm { return jose.SignatureAlgorithm(alg) }
