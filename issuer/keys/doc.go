// Package keys manages the embedded issuer's keys: one active signing key
// per configured JWS alg (HS256/384/512, RS256/384/512, PS256/384/512,
// ES256/384/512; RFC 7518 §3), the retired keys that still verify, and the
// JWE direct-encryption ("dir", RFC 7518 §4.5) key of the encrypted token
// format.
//
// Keys live in the issuer's store (storage.Store's Keys and UpdateKeys) as
// private JWKs, so every instance sharing a store signs with the same keys
// and a restart keeps them. Open loads them, imports configured key files
// and generates what is missing, all in one atomic UpdateKeys; Rotate adds
// a new active key and retires the old one, which keeps verifying until
// PruneRetired drops it; Set.Reload picks up a rotation made elsewhere,
// and puts back the keys of the set that the store lost (a Redis restarted
// empty), so that no instance drops a key it signed with because another
// instance, started on the empty store, generated a new set.
//
// Key ids: the RFC 7638 JWK thumbprint (SHA-256, base64url) for RSA and EC
// keys, so the same key always gets the same kid; a random id for HMAC and
// dir keys.
//
// # Security
//
// PublicJWKS publishes only the public half of RSA and EC keys. HMAC
// secrets and dir keys have no public half and never leave the store except
// to this process; this is asserted for every alg in the tests.
//
// Every key is checked against its alg when stored or imported, not when
// first used: RSA keys of fewer than 2048 bits (RFC 7518 §3.3), EC keys on
// another curve than the alg names (§3.4: ES256 is P-256, ES384 P-384,
// ES512 P-521), HMAC secrets shorter than the hash output (§3.2) and dir
// keys not of the enc's exact size are refused with an error that names
// the file or kid. A key is bound to one alg: the same RSA key is not
// stored for RS256 and PS256 (one alg per key, RFC 7517 §4.4), which is
// what lets the token package refuse a token whose header alg differs from
// its key's.
//
// Randomness comes only from crypto/rand. Logs name algs and kids, never
// key material.
package keys
