package keys

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/bffgate/bffgate/issuer/storage"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// memStore is an in-memory Store of the two key methods, for these tests
// only: the bbolt and Redis stores run the shared storage contract suite.
type memStore struct {
	mu      sync.Mutex
	keys    []storage.Key
	updates int
}

func cloneKeys(in []storage.Key) []storage.Key {
	out := make([]storage.Key, len(in))
	for i, k := range in {
		k.Private = slices.Clone(k.Private)
		out[i] = k
	}
	return out
}

func (m *memStore) Keys(context.Context) ([]storage.Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return cloneKeys(m.keys), nil
}

func (m *memStore) UpdateKeys(_ context.Context, fn func([]storage.Key) ([]storage.Key, error)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	out, err := fn(cloneKeys(m.keys))
	if err != nil {
		return err
	}
	m.keys = cloneKeys(out)
	m.updates++
	return nil
}

var _ Store = (*memStore)(nil)

var fixedNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func clock() time.Time { return fixedNow }

// allAlgsStore returns a store holding an active key for every alg and a
// dir key for A128CBC-HS256, generated once per test binary (six RSA keys
// are slow under -race on two cores) and cloned for each caller.
var allAlgsKeys = sync.OnceValues(func() ([]storage.Key, error) {
	st := &memStore{}
	_, err := Open(context.Background(), Config{Store: st, Algorithms: SigningAlgorithms(), Encryption: "A128CBC-HS256", Now: clock})
	return st.keys, err
})

func allAlgsStore(t *testing.T) *memStore {
	t.Helper()
	k, err := allAlgsKeys()
	if err != nil {
		t.Fatalf("Open with every alg: %v", err)
	}
	return &memStore{keys: cloneKeys(k)}
}

func TestOpenGeneratesInOneUpdateAndRestartKeepsKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := &memStore{}
	cfg := Config{Store: st, Algorithms: []string{"ES256", "HS384", "ES256"}, Encryption: "A256GCM", Now: clock}
	s1, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if st.updates != 1 {
		t.Fatalf("Open made %d UpdateKeys calls, want 1", st.updates)
	}
	if len(st.keys) != 3 {
		t.Fatalf("stored %d keys, want 3 (ES256, HS384, dir)", len(st.keys))
	}
	if got := s1.Algorithms(); !slices.Equal(got, []string{"ES256", "HS384"}) {
		t.Fatalf("Algorithms() = %v", got)
	}
	for _, k := range st.keys {
		if !k.Active || !k.Created.Equal(fixedNow) || !k.Retired.IsZero() {
			t.Fatalf("stored key %+v", k)
		}
	}

	s2, err := Open(ctx, cfg) // a restart
	if err != nil {
		t.Fatal(err)
	}
	if len(st.keys) != 3 {
		t.Fatalf("restart stored %d keys, want still 3", len(st.keys))
	}
	for _, alg := range []string{"ES256", "HS384"} {
		k1, kid1, err1 := s1.Signing(alg)
		k2, kid2, err2 := s2.Signing(alg)
		if err1 != nil || err2 != nil || kid1 != kid2 {
			t.Fatalf("%s: kid %s vs %s (%v, %v)", alg, kid1, kid2, err1, err2)
		}
		if !sameJWK(t, k1.Key.(jose.JSONWebKey), k2.Key.(jose.JSONWebKey)) {
			t.Fatalf("%s: key material changed across restart", alg)
		}
	}
	kid1, key1, enc1, err := s1.Encryption()
	if err != nil {
		t.Fatal(err)
	}
	kid2, key2, enc2, _ := s2.Encryption()
	if kid1 != kid2 || string(key1) != string(key2) || enc1 != "A256GCM" || enc2 != enc1 || len(key1) != 32 {
		t.Fatal("dir key changed across restart or has the wrong size")
	}
	if k, ok := s2.DecryptionKey(kid1); !ok || string(k) != string(key1) {
		t.Fatal("DecryptionKey(active kid)")
	}
	if _, _, ok := s2.VerificationKey(kid1); ok {
		t.Fatal("a dir key is served as a verification key")
	}
	_, esKID, _ := s1.Signing("ES256")
	if _, ok := s2.DecryptionKey(esKID); ok {
		t.Fatal("a signing key is served as a decryption key")
	}
}

func sameJWK(t *testing.T, a, b jose.JSONWebKey) bool {
	t.Helper()
	ja, err := a.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	jb, err := b.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return string(ja) == string(jb)
}

func TestConcurrentOpenAgreesOnKeys(t *testing.T) {
	t.Parallel()
	st := &memStore{}
	cfg := Config{Store: st, Algorithms: []string{"ES384", "HS256"}, Now: clock}
	sets := make([]*Set, 4)
	var wg sync.WaitGroup
	for i := range sets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := Open(context.Background(), cfg)
			if err != nil {
				t.Error(err)
			}
			sets[i] = s
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if len(st.keys) != 2 {
		t.Fatalf("%d keys stored, want 2: instances starting at once each generated their own", len(st.keys))
	}
	for _, alg := range cfg.Algorithms {
		_, want, _ := sets[0].Signing(alg)
		for _, s := range sets[1:] {
			if _, got, _ := s.Signing(alg); got != want {
				t.Fatalf("%s: instances disagree on the active key", alg)
			}
		}
	}
}

func TestEveryAlgSignsAndVerifies(t *testing.T) {
	t.Parallel()
	s, err := Open(context.Background(), Config{Store: allAlgsStore(t), Algorithms: SigningAlgorithms(), Encryption: "A128CBC-HS256", Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	for _, alg := range SigningAlgorithms() {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			sk, kid, err := s.Signing(alg)
			if err != nil {
				t.Fatal(err)
			}
			if string(sk.Algorithm) != alg {
				t.Fatalf("SigningKey.Algorithm = %s", sk.Algorithm)
			}
			signer, kid2, err := s.Signer(alg, nil)
			if err != nil || kid2 != kid {
				t.Fatal(err)
			}
			signed, err := signer.Sign([]byte("payload"))
			if err != nil {
				t.Fatal(err)
			}
			compact, err := signed.CompactSerialize()
			if err != nil {
				t.Fatal(err)
			}
			jws, err := jose.ParseSignedCompact(compact, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
			if err != nil {
				t.Fatal(err)
			}
			if jws.Signatures[0].Protected.KeyID != kid {
				t.Fatalf("header kid %q, want %q", jws.Signatures[0].Protected.KeyID, kid)
			}
			key, kalg, ok := s.VerificationKey(kid)
			if !ok || kalg != alg {
				t.Fatalf("VerificationKey(%s) = %v %s", kid, ok, kalg)
			}
			if got, err := jws.Verify(key); err != nil || string(got) != "payload" {
				t.Fatalf("verify: %v", err)
			}
			if IsAsymmetric(alg) {
				// kid is the RFC 7638 thumbprint.
				tp, _ := (&jose.JSONWebKey{Key: key}).Thumbprint(crypto.SHA256)
				if kid != base64.RawURLEncoding.EncodeToString(tp) {
					t.Fatal("kid is not the RFC 7638 thumbprint")
				}
			}
			if _, _, err := s.Signing("none"); !errors.Is(err, ErrUnsupportedAlg) {
				t.Fatalf("Signing(none): %v", err)
			}
		})
	}
}

// TestPublicJWKSHasNoPrivateMaterial checks, for every alg, that the JWK
// set holds the public key of every RS, PS and ES key and nothing of an HS
// or dir key.
func TestPublicJWKSHasNoPrivateMaterial(t *testing.T) {
	t.Parallel()
	st := allAlgsStore(t)
	s, err := Open(context.Background(), Config{Store: st, Algorithms: SigningAlgorithms(), Encryption: "A128CBC-HS256", Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	set := s.PublicJWKS()
	raw, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	byKID := map[string]map[string]any{}
	for _, k := range doc.Keys {
		for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"} {
			if _, ok := k[private]; ok {
				t.Errorf("JWKS key %v has private member %q", k["kid"], private)
			}
		}
		if k["use"] != "sig" {
			t.Errorf("key %v use %v", k["kid"], k["use"])
		}
		if k["kty"] == "oct" {
			t.Errorf("symmetric key %v published", k["kid"])
		}
		byKID[k["kid"].(string)] = k
	}
	for _, sk := range st.keys {
		_, published := byKID[sk.ID]
		if IsAsymmetric(sk.Alg) != published {
			t.Errorf("%s key %s published=%v", sk.Alg, sk.ID, published)
		}
		if published && byKID[sk.ID]["alg"] != sk.Alg {
			t.Errorf("%s key published with alg %v", sk.Alg, byKID[sk.ID]["alg"])
		}
		// No secret of any key, in any encoding, appears in the JWKS.
		var jwk map[string]any
		_ = json.Unmarshal(sk.Private, &jwk)
		for _, member := range []string{"d", "k", "p", "q"} {
			if v, ok := jwk[member].(string); ok && strings.Contains(string(raw), v) {
				t.Errorf("%s key %s: private member %s found in the JWKS", sk.Alg, sk.ID, member)
			}
		}
	}
	if len(byKID) != 9 {
		t.Errorf("JWKS has %d keys, want 9 (RS, PS, ES x 3)", len(byKID))
	}
	for _, k := range set.Keys {
		if !k.IsPublic() {
			t.Errorf("key %s is not public", k.KeyID)
		}
	}
}

func TestRotateKeepsOldKeyVerifying(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, alg := range []string{"ES256", "HS512", AlgDir} {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			st := &memStore{}
			cfg := Config{Store: st, Now: clock}
			if alg == AlgDir {
				cfg.Algorithms, cfg.Encryption = []string{"ES384"}, "A128CBC-HS256"
			} else {
				cfg.Algorithms = []string{alg}
			}
			s, err := Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			oldKID, _ := s.ActiveKID(alg)
			var oldJWS *jose.JSONWebSignature
			if alg != AlgDir {
				signer, _, err := s.Signer(alg, nil)
				if err != nil {
					t.Fatal(err)
				}
				oldJWS, _ = signer.Sign([]byte("old"))
			}
			later := fixedNow.Add(time.Hour)
			newKID, err := Rotate(ctx, st, alg, later)
			if err != nil {
				t.Fatal(err)
			}
			if newKID == oldKID {
				t.Fatal("Rotate kept the kid")
			}
			if got, _ := s.ActiveKID(alg); got != oldKID {
				t.Fatal("the set changed before Reload")
			}
			if err := s.Reload(ctx); err != nil {
				t.Fatal(err)
			}
			if got, _ := s.ActiveKID(alg); got != newKID {
				t.Fatalf("after Reload the active kid is %s, want %s", got, newKID)
			}
			var old storage.Key
			for _, k := range st.keys {
				if k.ID == oldKID {
					old = k
				}
			}
			if old.Active || !old.Retired.Equal(later) {
				t.Fatalf("old key not retired at the rotation time: %+v", old)
			}
			if alg == AlgDir {
				if k, ok := s.DecryptionKey(oldKID); !ok || len(k) != 32 {
					t.Fatal("the retired dir key no longer decrypts")
				}
				kid, key, _, _ := s.Encryption()
				if kid != newKID || len(key) != 32 {
					t.Fatal("Encryption() after rotation")
				}
			} else {
				key, kalg, ok := s.VerificationKey(oldKID)
				if !ok || kalg != alg {
					t.Fatal("the retired key is gone")
				}
				if _, err := oldJWS.Verify(key); err != nil {
					t.Fatalf("the retired key no longer verifies: %v", err)
				}
				if IsAsymmetric(alg) {
					jwks := s.PublicJWKS()
					if len(jwks.Keys) != 2 || jwks.Keys[0].KeyID != newKID || jwks.Keys[1].KeyID != oldKID {
						t.Fatalf("JWKS after rotation: %v", kids(jwks))
					}
				}
			}

			// Pruning: kept within keep, dropped after.
			pruned := PruneRetired(st.keys, later.Add(time.Hour), 2*time.Hour)
			if len(pruned) != len(st.keys) {
				t.Fatal("PruneRetired dropped a key retired within keep")
			}
			pruned = PruneRetired(st.keys, later.Add(3*time.Hour), 2*time.Hour)
			if len(pruned) != len(st.keys)-1 || slices.ContainsFunc(pruned, func(k storage.Key) bool { return k.ID == oldKID }) {
				t.Fatal("PruneRetired kept the old key past keep")
			}
			if err := st.UpdateKeys(ctx, func(k []storage.Key) ([]storage.Key, error) {
				return PruneRetired(k, later.Add(3*time.Hour), 2*time.Hour), nil
			}); err != nil {
				t.Fatal(err)
			}
			if err := s.Reload(ctx); err != nil {
				t.Fatal(err)
			}
			if _, _, ok := s.VerificationKey(oldKID); ok {
				t.Fatal("a pruned key still verifies after Reload")
			}
		})
	}
}

func kids(s jose.JSONWebKeySet) []string {
	var out []string
	for _, k := range s.Keys {
		out = append(out, k.KeyID)
	}
	return out
}

func TestRotateKeepsRSASize(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := allAlgsStore(t)
	kid, err := Rotate(ctx, st, "PS384", fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, Config{Store: st, Algorithms: []string{"PS384"}, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	key, _, _ := s.VerificationKey(kid)
	if n := key.(*rsa.PublicKey).N.BitLen(); n != 2048 {
		t.Fatalf("rotated RSA key has %d bits", n)
	}
	if _, err := Rotate(ctx, st, "XS256", fixedNow); !errors.Is(err, ErrUnsupportedAlg) {
		t.Fatalf("Rotate(XS256): %v", err)
	}
}

func TestImportFiles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := &memStore{}
	// A generated RS256 key exists first; the file then takes over.
	if _, err := Open(ctx, Config{Store: st, Algorithms: []string{"RS256"}, Now: clock}); err != nil {
		t.Fatal(err)
	}
	generated := st.keys[0].ID
	cfg := fixedConfig(st)
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Algorithms(); !slices.Equal(got, []string{"RS256", "PS256", "ES256", "ES384", "ES512", "HS256"}) {
		t.Fatalf("Algorithms() = %v", got)
	}
	rsKID, _ := s.ActiveKID("RS256")
	if rsKID == generated {
		t.Fatal("the imported RS256 key did not become active")
	}
	if _, _, ok := s.VerificationKey(generated); !ok {
		t.Fatal("the replaced generated key is gone; it must keep verifying")
	}
	if kid, _ := s.ActiveKID("ES512"); kid != "es512-fixed" {
		t.Fatalf("JWK kid not kept: %s", kid)
	}
	if kid, _ := s.ActiveKID("ES256"); kid != "es256-fixed" {
		t.Fatalf("FileKey.KID not used: %s", kid)
	}
	hsKID, _ := s.ActiveKID("HS256")
	dirKID, dirKey, enc, _ := s.Encryption()
	want, _ := os.ReadFile("testdata/dir.b64")
	if got := base64.StdEncoding.EncodeToString(dirKey); got != strings.TrimSpace(string(want)) || enc != "A128CBC-HS256" {
		t.Fatal("dir key not imported as in the file")
	}
	n := len(st.keys)

	// Re-importing the same files (a restart) changes nothing: the
	// symmetric keys keep their random kids, nothing is added.
	s2, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.keys) != n {
		t.Fatalf("restart with the same files stored %d keys, had %d", len(st.keys), n)
	}
	if k, _ := s2.ActiveKID("HS256"); k != hsKID {
		t.Fatal("HS256 file key got a new kid on restart")
	}
	if k, _, _, _ := s2.Encryption(); k != dirKID {
		t.Fatal("dir file key got a new kid on restart")
	}

	// Rotation away from a file key is undone by the next Open while the
	// file is configured (the configuration pins it).
	if _, err := Rotate(ctx, st, "RS256", fixedNow.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	s3, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if k, _ := s3.ActiveKID("RS256"); k != rsKID {
		t.Fatal("the configured file key was not made active again")
	}
}

func fixedConfig(st Store) Config {
	return Config{
		Store:      st,
		Algorithms: []string{"RS256"},
		Encryption: "A128CBC-HS256",
		Files: []FileKey{
			{Path: "testdata/rs256-pkcs1.pem", Alg: "RS256"},
			{Path: "testdata/ps256-pkcs8.pem", Alg: "PS256"},
			{Path: "testdata/es256-sec1.pem", Alg: "ES256", KID: "es256-fixed"},
			{Path: "testdata/es384-pkcs8.pem", Alg: "ES384"},
			{Path: "testdata/es512.jwk.json"}, // alg and kid from the JWK
			{Path: "testdata/hs256.b64", Alg: "HS256", KID: "hs256-fixed"},
			{Path: "testdata/dir.b64", Alg: "dir", KID: "dir-fixed"},
		},
		Now: clock,
	}
}

// TestJWKSGolden pins the wire shape of the JWK set (RFC 7517 §5) for
// keys imported from testdata.
func TestJWKSGolden(t *testing.T) {
	t.Parallel()
	s, err := Open(context.Background(), fixedConfig(&memStore{}))
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.MarshalIndent(s.PublicJWKS(), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	golden := filepath.Join("testdata", "jwks.golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Fatalf("JWKS differs from %s:\n%s", golden, got)
	}
	for _, secret := range []string{"hs256-fixed", "dir-fixed"} {
		if strings.Contains(string(got), secret) {
			t.Fatalf("JWKS names the symmetric key %s", secret)
		}
	}
}

func TestBadFiles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		file   FileKey
		enc    string
		target error
		says   string
	}{
		{"RSA 1024", FileKey{Path: "testdata/bad-rsa1024.pem", Alg: "RS256"}, "", ErrWeakKey, "at least 2048 bits"},
		{"P-256 key for ES384", FileKey{Path: "testdata/es256-sec1.pem", Alg: "ES384"}, "", ErrKeyMismatch, "needs curve P-384"},
		{"P-384 key for ES512", FileKey{Path: "testdata/es384-pkcs8.pem", Alg: "ES512"}, "", ErrKeyMismatch, "P-521"},
		{"RSA key for ES256", FileKey{Path: "testdata/rs256-pkcs1.pem", Alg: "ES256"}, "", ErrKeyMismatch, "needs an EC private key"},
		{"EC key for PS256", FileKey{Path: "testdata/es256-sec1.pem", Alg: "PS256"}, "", ErrKeyMismatch, "needs an RSA private key"},
		{"secret for RS256", FileKey{Path: "testdata/hs256.b64", Alg: "RS256"}, "", ErrKeyMismatch, "needs an RSA private key"},
		{"RSA key for HS256", FileKey{Path: "testdata/rs256-pkcs1.pem", Alg: "HS256"}, "", ErrKeyMismatch, "needs a symmetric secret"},
		{"short HS256 secret", FileKey{Path: "testdata/bad-hs256-short.b64", Alg: "HS256"}, "", ErrWeakKey, "at least 32 bytes"},
		{"HS512 with 32 bytes", FileKey{Path: "testdata/hs256.b64", Alg: "HS512"}, "", ErrWeakKey, "at least 64 bytes"},
		{"public key PEM", FileKey{Path: "testdata/bad-public.pem", Alg: "RS256"}, "", ErrKeyMismatch, "holds no private key"},
		{"public JWK", FileKey{Path: "testdata/bad-public.jwk.json"}, "", ErrKeyMismatch, "only a public key"},
		{"encrypted PEM", FileKey{Path: "testdata/bad-encrypted.pem", Alg: "RS256"}, "", ErrBadKeyFile, "encrypted PEM is not supported"},
		{"garbage", FileKey{Path: "testdata/bad-garbage.txt", Alg: "HS256"}, "", ErrBadKeyFile, "neither a JWK, a PEM private key, nor a base64 secret"},
		{"missing file", FileKey{Path: "testdata/does-not-exist.pem", Alg: "RS256"}, "", os.ErrNotExist, "no such file"},
		{"JWK alg differs", FileKey{Path: "testdata/es512.jwk.json", Alg: "ES256"}, "", ErrBadKeyFile, `the JWK says alg "ES512"`},
		{"JWK kid differs", FileKey{Path: "testdata/es512.jwk.json", KID: "other"}, "", ErrBadKeyFile, `the JWK says kid "es512-fixed"`},
		{"no alg for PEM", FileKey{Path: "testdata/rs256-pkcs1.pem"}, "", ErrBadKeyFile, "no algorithm"},
		{"unknown alg", FileKey{Path: "testdata/rs256-pkcs1.pem", Alg: "RS1"}, "", ErrUnsupportedAlg, "unsupported algorithm"},
		{"dir key without encryption", FileKey{Path: "testdata/dir.b64", Alg: "dir"}, "", ErrBadKeyFile, "Config.Encryption is empty"},
		{"dir key of the wrong size", FileKey{Path: "testdata/dir.b64", Alg: "dir"}, "A128GCM", ErrWeakKey, "exactly 16 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := &memStore{}
			_, err := Open(context.Background(), Config{Store: st, Files: []FileKey{tt.file}, Encryption: tt.enc, Now: clock})
			if err == nil {
				t.Fatal("Open accepted the file")
			}
			if !errors.Is(err, tt.target) {
				t.Errorf("error %q is not %v", err, tt.target)
			}
			if !strings.Contains(err.Error(), tt.file.Path) || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("error %q does not name the file and say %q", err, tt.says)
			}
			if st.updates != 0 {
				t.Error("a bad file still changed the store")
			}
		})
	}
}

func TestTwoFilesForOneAlg(t *testing.T) {
	t.Parallel()
	_, err := Open(context.Background(), Config{Store: &memStore{}, Files: []FileKey{
		{Path: "testdata/rs256-pkcs1.pem", Alg: "RS256"},
		{Path: "testdata/ps256-pkcs8.pem", Alg: "RS256"},
	}})
	if !errors.Is(err, ErrBadKeyFile) || !strings.Contains(err.Error(), "only one key per alg") {
		t.Fatalf("got %v", err)
	}
	// One RSA key for two algs would give two keys one kid.
	_, err = Open(context.Background(), Config{Store: &memStore{}, Files: []FileKey{
		{Path: "testdata/rs256-pkcs1.pem", Alg: "RS256"},
		{Path: "testdata/rs256-pkcs1.pem", Alg: "PS256"},
	}})
	if !errors.Is(err, ErrKeyMismatch) || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("one key for two algs: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		says string
	}{
		{"no store", Config{Algorithms: []string{"RS256"}}, "Config.Store"},
		{"alg none", Config{Store: &memStore{}, Algorithms: []string{"none"}}, "Config.Algorithms"},
		{"EdDSA", Config{Store: &memStore{}, Algorithms: []string{"EdDSA"}}, "Config.Algorithms"},
		{"RSA 1024", Config{Store: &memStore{}, Algorithms: []string{"RS256"}, RSABits: 1024}, "Config.RSABits"},
		{"bad enc", Config{Store: &memStore{}, Algorithms: []string{"RS256"}, Encryption: "A128KW"}, "Config.Encryption"},
		{"nothing", Config{Store: &memStore{}}, "Config.Algorithms is empty"},
		{"empty path", Config{Store: &memStore{}, Files: []FileKey{{Alg: "RS256"}}}, "Config.Files[0].Path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := Open(context.Background(), tt.cfg); err == nil || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("got %v, want an error naming %s", err, tt.says)
			}
		})
	}
}

func TestCorruptStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := &memStore{keys: []storage.Key{{ID: "broken", Alg: "RS256", Use: "sig", Private: []byte(`{"kty":"RSA"`), Active: true}}}
	_, err := Open(ctx, Config{Store: st, Algorithms: []string{"RS256"}})
	if !errors.Is(err, ErrCorruptStore) || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("got %v", err)
	}

	// Reload keeps the working keys when the store turns bad.
	good := &memStore{}
	s, err := Open(ctx, Config{Store: good, Algorithms: []string{"ES256"}})
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := s.ActiveKID("ES256")
	good.keys[0].Private = []byte("{}")
	if err := s.Reload(ctx); !errors.Is(err, ErrCorruptStore) {
		t.Fatalf("Reload of a corrupt store: %v", err)
	}
	if k, _ := s.ActiveKID("ES256"); k != kid {
		t.Fatal("a failed Reload dropped the working keys")
	}
	// A store that lost its keys gets them back: the Set holds them.
	good.keys = nil
	if err := s.Reload(ctx); err != nil {
		t.Fatalf("Reload of a store that lost its keys: %v", err)
	}
	if k, _ := s.ActiveKID("ES256"); k != kid || len(good.keys) != 1 || good.keys[0].ID != kid {
		t.Fatalf("after Reload of an emptied store: active %s, store %d keys; want %s put back", k, len(good.keys), kid)
	}

	// A stored key whose material does not fit its alg.
	ec, _ := generate("ES256", 0)
	sk, _ := ec.toStored("k1", true, fixedNow)
	sk.Alg = "ES384"
	_, err = Open(ctx, Config{Store: &memStore{keys: []storage.Key{sk}}, Algorithms: []string{"ES384"}})
	if !errors.Is(err, ErrCorruptStore) || !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("mismatched stored key: %v", err)
	}
}

// TestTwoActiveKeysAreNormalized: a store left with two active keys of one
// alg ends up with the newest active and the other retired.
func TestTwoActiveKeysAreNormalized(t *testing.T) {
	t.Parallel()
	a, _ := generate("ES256", 0)
	b, _ := generate("ES256", 0)
	ka, _ := a.toStored("a", true, fixedNow)
	kb, _ := b.toStored("b", true, fixedNow.Add(time.Second))
	st := &memStore{keys: []storage.Key{ka, kb}}
	s, err := Open(context.Background(), Config{Store: st, Algorithms: []string{"ES256"}, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if kid, _ := s.ActiveKID("ES256"); kid != "b" {
		t.Fatalf("active %s, want the newest", kid)
	}
	if st.keys[0].Active || st.keys[0].Retired.IsZero() {
		t.Fatal("the older key stayed active")
	}
}

func TestEncryptionNotConfigured(t *testing.T) {
	t.Parallel()
	s, err := Open(context.Background(), Config{Store: &memStore{}, Algorithms: []string{"HS256"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.Encryption(); !errors.Is(err, ErrNoKey) {
		t.Fatalf("Encryption() without JWE: %v", err)
	}
	if len(s.PublicJWKS().Keys) != 0 {
		t.Fatal("an HS-only set publishes keys")
	}
	if _, _, err := s.Signing("RS256"); !errors.Is(err, ErrNoKey) {
		t.Fatalf("Signing(unconfigured alg): %v", err)
	}
}

func TestGenerateSizes(t *testing.T) {
	t.Parallel()
	for _, alg := range []string{"HS256", "HS384", "HS512"} {
		m, err := generate(alg, 0)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := m.symmetric()
		if h, _ := HashFor(alg); len(b) != h.Size() {
			t.Errorf("%s secret has %d bytes", alg, len(b))
		}
	}
	for alg, curve := range map[string]string{"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"} {
		m, _ := generate(alg, 0)
		if got := m.priv.(*ecdsa.PrivateKey).Curve.Params().Name; got != curve {
			t.Errorf("%s on %s", alg, got)
		}
	}
}
