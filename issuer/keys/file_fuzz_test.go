package keys

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/bffgate/bffgate/internal/fuzzcorpus"
)

// FuzzReadKeyFile imports a key file (PEM, JWK or a base64 secret) for an
// alg, as Open does with Config.Files. Properties:
//   - a refused file is ErrBadKeyFile, and the error does not hold the
//     file's bytes (key material must not reach a log line);
//   - an accepted key is usable as its alg says: a JWS signed with it
//     verifies with its public half (the secret for HS), which a JWK of it
//     publishes without private parts; a dir key has the enc's size;
//   - an asymmetric key has an RFC 7638 thumbprint kid.
//
// Seeds: every file of testdata/ (the real keys the other tests import
// and the bad ones) under its alg and under a wrong one.
func FuzzReadKeyFile(f *testing.F) {
	seeds := map[string][]string{
		"rs256-pkcs1.pem": {"RS256", "ES256"}, "ps256-pkcs8.pem": {"PS256", "HS256"},
		"es256-sec1.pem": {"ES256", "ES384"}, "es384-pkcs8.pem": {"ES384", "RS256"},
		"es512.jwk.json": {"", "ES512", "ES256"}, "hs256.b64": {"HS256", "HS512", "dir"},
		"dir.b64": {"dir", "HS256"}, "bad-encrypted.pem": {"RS256"}, "bad-garbage.txt": {"HS256"},
		"bad-hs256-short.b64": {"HS256"}, "bad-public.jwk.json": {""}, "bad-public.pem": {"RS256"},
		"bad-rsa1024.pem": {"RS256"},
	}
	for file, algs := range seeds {
		data, err := os.ReadFile(filepath.Join("testdata", file))
		if err != nil {
			f.Fatal(err)
		}
		for _, alg := range algs {
			fuzzcorpus.Add(f, "file-"+file+"-"+strings.ToLower(alg), data, alg)
		}
	}
	fuzzcorpus.Add(f, "adv-two-pem-blocks", []byte("-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n"), "RS256")
	fuzzcorpus.Add(f, "adv-jwk-oct", []byte(`{"kty":"oct","k":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","alg":"HS256"}`), "")
	fuzzcorpus.Add(f, "adv-jwk-alg-mismatch", []byte(`{"kty":"oct","k":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","alg":"HS512"}`), "HS256")
	fuzzcorpus.Add(f, "adv-whitespace", []byte(" \n\t "), "HS256")
	fuzzcorpus.Add(f, "adv-url-base64", []byte("-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_"), "dir")

	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, alg string) {
		path := filepath.Join(dir, "key")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		imps, err := readImports([]FileKey{{Path: path, Alg: alg}}, "A128CBC-HS256")
		if err != nil {
			if !errors.Is(err, ErrBadKeyFile) {
				t.Fatalf("error %q is not ErrBadKeyFile", err)
			}
			trimmed := bytes.TrimSpace(data)
			if len(trimmed) >= 16 && strings.Contains(err.Error(), string(trimmed[:16])) {
				t.Fatalf("the error %q holds the file's bytes", err)
			}
			return
		}
		if len(imps) != 1 {
			t.Fatalf("%d keys imported from one file", len(imps))
		}
		m := imps[0].m
		if err := m.validate(); err != nil {
			t.Fatalf("imported key does not validate: %v", err)
		}
		if m.alg == AlgDir {
			if b, ok := m.symmetric(); !ok || len(b) != 32 {
				t.Fatalf("dir key for A128CBC-HS256 of %d bytes", len(b))
			}
			return
		}
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: joseAlg(m.alg), Key: m.priv}, nil)
		if err != nil {
			t.Fatalf("%s key cannot sign: %v", m.alg, err)
		}
		jws, err := signer.Sign([]byte("payload"))
		if err != nil {
			t.Fatalf("%s key cannot sign: %v", m.alg, err)
		}
		compact, err := jws.CompactSerialize()
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := jose.ParseSignedCompact(compact, []jose.SignatureAlgorithm{joseAlg(m.alg)})
		if err != nil {
			t.Fatal(err)
		}
		if out, err := parsed.Verify(m.public()); err != nil || string(out) != "payload" {
			t.Fatalf("%s: a JWS signed with the key does not verify with its public half: %v", m.alg, err)
		}
		if _, sym := m.symmetric(); sym {
			return
		}
		pub := jose.JSONWebKey{Key: m.public(), Algorithm: m.alg}
		if !pub.IsPublic() || !pub.Valid() {
			t.Fatalf("%s: the public JWK is not a valid public key", m.alg)
		}
		if kid, err := m.kid(); err != nil || kid == "" {
			t.Fatalf("%s: no thumbprint kid: %v", m.alg, err)
		}
	})
}
