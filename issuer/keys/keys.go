package keys

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/bffgate/bffgate/issuer/storage"
)

// Store is the part of storage.Store that keys are persisted through.
type Store interface {
	// Keys returns every stored key, active and retired.
	Keys(ctx context.Context) ([]storage.Key, error)
	// UpdateKeys atomically replaces the key list with fn's result.
	UpdateKeys(ctx context.Context, fn func([]storage.Key) ([]storage.Key, error)) error
}

var _ Store = storage.Store(nil)

// FileKey names a key file to import at Open: a PEM private key (PKCS #1,
// PKCS #8 or SEC 1), a JWK JSON object, or for HS and dir keys the raw
// secret in base64.
type FileKey struct {
	// Path is the file.
	Path string `yaml:"path"`
	// Alg is the JWS alg (RS256, ES384, HS512, ...) or "dir". It may be
	// empty when the file is a JWK with an "alg" member.
	Alg string `yaml:"alg"`
	// KID is the key id. Empty means the JWK's "kid", else the RFC 7638
	// thumbprint (asymmetric) or a random id (symmetric; a secret already
	// stored keeps its id).
	KID string `yaml:"kid"`
}

// Config configures Open.
type Config struct {
	// Store persists the keys (storage.Store satisfies it). Required.
	Store Store
	// Algorithms are the JWS algs that must have an active key, e.g.
	// ["RS256", "ES256"]. Open generates a missing one.
	Algorithms []string
	// Encryption is the JWE enc of the direct-encryption key: "" (no JWE),
	// "A128CBC-HS256" or "A256GCM" (also A192CBC-HS384, A256CBC-HS512,
	// A128GCM, A192GCM). A dir key of the enc's size must exist; Open
	// generates one if not.
	Encryption string
	// Files are imported at Open. An imported key becomes the active key
	// of its alg (the configuration pins it: a key rotated away by the CLI
	// becomes active again at the next Open while its file is configured).
	Files []FileKey
	// RSABits is the modulus size of generated RSA keys; 0 means 2048.
	RSABits int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives key generation, import and retirement events (never
	// key material); nil means slog.Default().
	Logger *slog.Logger
}

// Set is the issuer's key set: for each configured alg one active signing
// key, plus retired keys that still verify, and the JWE dir key. It is safe
// for concurrent use; Reload swaps in a new snapshot atomically.
type Set struct {
	store  Store
	algs   []string
	enc    string
	rsaBit int
	now    func() time.Time
	log    *slog.Logger

	reload sync.Mutex
	cur    atomic.Pointer[snapshot]
}

type entry struct {
	kid     string
	alg     string
	active  bool
	created time.Time
	retired time.Time
	m       material
	pub     any // verification key: public key, or the secret for HS
	sym     []byte
}

type snapshot struct {
	byKID  map[string]*entry
	active map[string]*entry // alg -> active key
	jwks   []jose.JSONWebKey
	// stored is the list the snapshot was built from: what Reload puts
	// back into a store that lost it, and compares to skip a rebuild.
	stored []storage.Key
}

// Open loads the key set from cfg.Store, imports cfg.Files, generates
// (crypto/rand) an active key for every alg of cfg.Algorithms that lacks
// one and a dir key when cfg.Encryption asks for it, and stores the result
// in one UpdateKeys call, so that two instances starting at once on one
// store end up with the same keys. Every stored and imported key is
// validated (RSA at least 2048 bits, EC on the alg's curve, HMAC secrets at
// least the hash size); an error names the file or kid and the problem.
func Open(ctx context.Context, cfg Config) (*Set, error) {
	if cfg.Store == nil {
		return nil, errors.New("keys: Config.Store is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RSABits == 0 {
		cfg.RSABits = MinRSABits
	}
	if cfg.RSABits < MinRSABits {
		return nil, fmt.Errorf("keys: Config.RSABits is %d; RSA keys must have at least %d bits (RFC 7518 §3.3)", cfg.RSABits, MinRSABits)
	}
	if cfg.RSABits > 16384 {
		return nil, fmt.Errorf("keys: Config.RSABits is %d; at most 16384 is supported", cfg.RSABits)
	}
	algs := make([]string, 0, len(cfg.Algorithms))
	for _, a := range cfg.Algorithms {
		if !IsSigningAlg(a) {
			return nil, fmt.Errorf("keys: Config.Algorithms: %w %q (supported: %v)", ErrUnsupportedAlg, a, SigningAlgorithms())
		}
		if !slices.Contains(algs, a) {
			algs = append(algs, a)
		}
	}
	if cfg.Encryption != "" {
		if _, ok := encKeySize[cfg.Encryption]; !ok {
			return nil, fmt.Errorf("keys: Config.Encryption: %w: enc %q (want A128CBC-HS256 or A256GCM)", ErrUnsupportedAlg, cfg.Encryption)
		}
	}

	imports, err := readImports(cfg.Files, cfg.Encryption)
	if err != nil {
		return nil, err
	}
	for _, im := range imports {
		if im.m.alg != AlgDir && !slices.Contains(algs, im.m.alg) {
			algs = append(algs, im.m.alg)
		}
	}
	if len(algs) == 0 && cfg.Encryption == "" {
		return nil, errors.New("keys: Config.Algorithms is empty and no key file is configured; name at least one signing alg (e.g. RS256)")
	}

	s := &Set{store: cfg.Store, algs: algs, enc: cfg.Encryption, rsaBit: cfg.RSABits, now: cfg.Now, log: cfg.Logger}

	// Generating an RSA key takes tens to hundreds of milliseconds: do it
	// before the write transaction, for what the store lacks now. The
	// closure generates again only if another instance changed the set
	// in between (it usually has then generated the key itself).
	existing, err := cfg.Store.Keys(ctx)
	if err != nil {
		return nil, fmt.Errorf("keys: read store: %w", err)
	}
	plan := s.planner(imports)
	pregen := map[string]material{}
	for _, alg := range plan.missing(existing) {
		m, err := generate(alg, s.sizeFor(alg))
		if err != nil {
			return nil, err
		}
		pregen[alg] = m
	}

	var final []storage.Key
	var events []event
	err = cfg.Store.UpdateKeys(ctx, func(keys []storage.Key) ([]storage.Key, error) {
		out, ev, err := plan.apply(keys, pregen, s.now().UTC())
		if err != nil {
			return nil, err
		}
		final, events = out, ev
		return out, nil
	})
	if err != nil {
		return nil, fmt.Errorf("keys: update store: %w", err)
	}
	for _, e := range events {
		s.log.LogAttrs(ctx, slog.LevelInfo, "issuer key "+e.what, slog.String("alg", e.alg), slog.String("kid", e.kid))
	}
	snap, err := s.build(final)
	if err != nil {
		return nil, err
	}
	s.cur.Store(snap)
	return s, nil
}

func (s *Set) sizeFor(alg string) int {
	if alg == AlgDir {
		return encKeySize[s.enc]
	}
	if info := signingAlgs[alg]; info.family == famRSA {
		return s.rsaBit
	}
	return 0
}

// Reload re-reads the store and swaps in the keys found, e.g. after
// another instance or the CLI rotated a key. On error the current keys stay
// in use.
//
// A store that lost keys this Set holds gets them back: when an active key
// of the current set is missing from the store (nothing removes an active
// key on purpose: Rotate retires it, PruneRetired keeps it), the store lost
// its data (a Redis restarted empty) and Reload adds every key of the set
// that the store lacks, in one UpdateKeys that adds and never replaces.
// Keys another instance generated meanwhile (one that started on the empty
// store) stay too: the set then holds both, the newest active key of an
// alg signs, and every instance verifies what any of them signed. A
// retired key missing while the active ones are there was pruned, and is
// dropped.
func (s *Set) Reload(ctx context.Context) error {
	s.reload.Lock()
	defer s.reload.Unlock()
	list, err := s.store.Keys(ctx)
	if err != nil {
		return fmt.Errorf("keys: reload: %w", err)
	}
	cur := s.cur.Load()
	if lostActive(cur, list) {
		if list, err = s.putBack(ctx, cur); err != nil {
			return fmt.Errorf("keys: reload: putting back the keys the store lost: %w", err)
		}
	}
	if sameKeys(cur.stored, list) {
		return nil
	}
	snap, err := s.build(list)
	if err != nil {
		return fmt.Errorf("keys: reload: %w", err)
	}
	s.cur.Store(snap)
	return nil
}

// lostActive reports whether an active key of snap is missing from list.
func lostActive(snap *snapshot, list []storage.Key) bool {
	for _, k := range snap.stored {
		if k.Active && !slices.ContainsFunc(list, func(l storage.Key) bool { return l.ID == k.ID }) {
			return true
		}
	}
	return false
}

// putBack adds to the store every key of snap it lacks, if it still lacks
// an active one when the transaction runs, and returns the stored list.
func (s *Set) putBack(ctx context.Context, snap *snapshot) ([]storage.Key, error) {
	var final []storage.Key
	var added []storage.Key
	err := s.store.UpdateKeys(ctx, func(keys []storage.Key) ([]storage.Key, error) {
		final, added = keys, nil
		if !lostActive(snap, keys) {
			return keys, nil // another instance put them back first
		}
		out := slices.Clone(keys)
		for _, k := range snap.stored {
			if !slices.ContainsFunc(keys, func(l storage.Key) bool { return l.ID == k.ID }) {
				out = append(out, k)
				added = append(added, k)
			}
		}
		final = out
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	for _, k := range added {
		s.log.LogAttrs(ctx, slog.LevelWarn, "issuer key put back into the store, which had lost it (was Redis restarted empty?)",
			slog.String("alg", k.Alg), slog.String("kid", k.ID), slog.Bool("active", k.Active))
	}
	return final, nil
}

// sameKeys reports whether two stored lists hold the same keys in the
// same states.
func sameKeys(a, b []storage.Key) bool {
	return slices.EqualFunc(a, b, func(x, y storage.Key) bool {
		return x.ID == y.ID && x.Alg == y.Alg && x.Use == y.Use && x.Active == y.Active &&
			x.Retired.Equal(y.Retired) && x.Created.Equal(y.Created) && bytes.Equal(x.Private, y.Private)
	})
}

// build decodes list into a snapshot and checks that every required alg
// has an active key.
func (s *Set) build(list []storage.Key) (*snapshot, error) {
	snap := &snapshot{byKID: make(map[string]*entry, len(list)), active: map[string]*entry{}, stored: slices.Clone(list)}
	for _, k := range list {
		m, err := fromStored(k)
		if err != nil {
			return nil, err
		}
		if _, dup := snap.byKID[k.ID]; dup {
			return nil, fmt.Errorf("%w: two keys with kid %s", ErrCorruptStore, k.ID)
		}
		e := &entry{kid: k.ID, alg: k.Alg, active: k.Active, created: k.Created, retired: k.Retired, m: m, pub: m.public()}
		e.sym, _ = m.symmetric()
		snap.byKID[k.ID] = e
		if k.Active {
			if prev := snap.active[k.Alg]; prev == nil || k.Created.After(prev.created) {
				snap.active[k.Alg] = e
			}
		}
		if IsAsymmetric(k.Alg) {
			snap.jwks = append(snap.jwks, jose.JSONWebKey{Key: e.pub, KeyID: k.ID, Algorithm: k.Alg, Use: UseSig})
		}
	}
	for _, alg := range s.algs {
		if snap.active[alg] == nil {
			return nil, fmt.Errorf("%w for %s in the store", ErrNoKey, alg)
		}
	}
	if s.enc != "" {
		e := snap.active[AlgDir]
		if e == nil {
			return nil, fmt.Errorf("%w for JWE (dir) in the store", ErrNoKey)
		}
		if len(e.sym) != encKeySize[s.enc] {
			return nil, fmt.Errorf("%w: the active dir key %s has %d bytes, %s needs %d", ErrWeakKey, e.kid, len(e.sym), s.enc, encKeySize[s.enc])
		}
	}
	// A stable order: active keys first, then newest first, so a JWKS
	// reader that takes the first key of an alg takes the signing one.
	slices.SortStableFunc(snap.jwks, func(a, b jose.JSONWebKey) int {
		ea, eb := snap.byKID[a.KeyID], snap.byKID[b.KeyID]
		if c := cmp.Compare(a.Algorithm, b.Algorithm); c != 0 {
			return c
		}
		if ea.active != eb.active {
			if ea.active {
				return -1
			}
			return 1
		}
		if c := eb.created.Compare(ea.created); c != 0 {
			return c
		}
		return cmp.Compare(a.KeyID, b.KeyID)
	})
	return snap, nil
}

// Signing returns the active key of alg as a go-jose signing key and its
// kid. go-jose writes the JWK's kid into the JWS header for RS, PS and ES
// keys but not for HS secrets: sign through Signer, or set the kid header
// yourself (jose.SignerOptions.WithHeader("kid", kid)).
func (s *Set) Signing(alg string) (jose.SigningKey, string, error) {
	if !IsSigningAlg(alg) {
		return jose.SigningKey{}, "", fmt.Errorf("keys: %w %q", ErrUnsupportedAlg, alg)
	}
	e := s.cur.Load().active[alg]
	if e == nil {
		return jose.SigningKey{}, "", fmt.Errorf("%w for %s", ErrNoKey, alg)
	}
	return jose.SigningKey{
		Algorithm: joseAlg(alg),
		Key:       jose.JSONWebKey{Key: e.m.priv, KeyID: e.kid, Algorithm: alg, Use: UseSig},
	}, e.kid, nil
}

// Signer returns a go-jose signer with alg's active key whose JWS header
// carries the kid for every alg (HS included), and that kid. opts may be
// nil; it is copied, not changed.
func (s *Set) Signer(alg string, opts *jose.SignerOptions) (jose.Signer, string, error) {
	sk, kid, err := s.Signing(alg)
	if err != nil {
		return nil, "", err
	}
	o := jose.SignerOptions{}
	if opts != nil {
		o = *opts
		o.ExtraHeaders = maps.Clone(opts.ExtraHeaders)
	}
	o.WithHeader(jose.HeaderKey("kid"), kid)
	signer, err := jose.NewSigner(sk, &o)
	if err != nil {
		return nil, "", fmt.Errorf("keys: signer for %s key %s: %w", alg, kid, err)
	}
	return signer, kid, nil
}

// VerificationKey returns the key that verifies signatures of kid (the
// public key, or the secret of an HS key) and its alg. Retired keys are
// found too: they verify the tokens they signed until those expire. A dir
// key is not a verification key (ok is false).
func (s *Set) VerificationKey(kid string) (key any, alg string, ok bool) {
	e := s.cur.Load().byKID[kid]
	if e == nil || e.alg == AlgDir {
		return nil, "", false
	}
	return e.pub, e.alg, true
}

// Encryption returns the active dir key and the configured enc. The error
// is ErrNoKey when JWE is not configured.
func (s *Set) Encryption() (kid string, key []byte, enc string, err error) {
	if s.enc == "" {
		return "", nil, "", fmt.Errorf("%w: JWE encryption is not configured (Config.Encryption)", ErrNoKey)
	}
	e := s.cur.Load().active[AlgDir]
	if e == nil {
		return "", nil, "", fmt.Errorf("%w for JWE (dir)", ErrNoKey)
	}
	return e.kid, e.sym, s.enc, nil
}

// DecryptionKey returns the dir key named kid, active or retired.
func (s *Set) DecryptionKey(kid string) ([]byte, bool) {
	e := s.cur.Load().byKID[kid]
	if e == nil || e.alg != AlgDir {
		return nil, false
	}
	return e.sym, true
}

// PublicJWKS returns the JWK set to publish at jwks_uri (RFC 7517 §5;
// OpenID Connect Discovery §3): the public half of every RS, PS and ES key,
// active and retired, each with kid, use "sig" and alg. HS secrets and dir
// keys are never in it: they have no public half.
func (s *Set) PublicJWKS() jose.JSONWebKeySet {
	src := s.cur.Load().jwks
	return jose.JSONWebKeySet{Keys: slices.Clone(src)}
}

// Algorithms returns the signing algs with an active key that the
// configuration asked for (Config.Algorithms and the algs of imported
// files), in configuration order.
func (s *Set) Algorithms() []string { return slices.Clone(s.algs) }

// EncryptionEnc returns the configured JWE enc ("" when none).
func (s *Set) EncryptionEnc() string { return s.enc }

// Rotate makes a new active key for alg in st and retires the current one
// (Retired = now): the retired key stays stored, so it keeps verifying (or
// decrypting) the tokens it made until PruneRetired drops it. A new RSA key
// has the size of the one it replaces (at least 2048 bits); a new dir key
// the size of the one it replaces (32 bytes when none). It returns the new
// kid. Running instances see the new key after Set.Reload.
func Rotate(ctx context.Context, st Store, alg string, now time.Time) (kid string, err error) {
	if st == nil {
		return "", errors.New("keys: Rotate: nil store")
	}
	if err := checkAlg(alg); err != nil {
		return "", fmt.Errorf("keys: Rotate: %w", err)
	}
	list, err := st.Keys(ctx)
	if err != nil {
		return "", fmt.Errorf("keys: Rotate: read store: %w", err)
	}
	size := 0
	for _, k := range list {
		if k.Alg == alg && k.Active {
			m, err := fromStored(k)
			if err != nil {
				return "", fmt.Errorf("keys: Rotate: %w", err)
			}
			size = materialSize(m)
		}
	}
	m, err := generate(alg, size)
	if err != nil {
		return "", err
	}
	kid, err = m.kid()
	if err != nil {
		return "", err
	}
	now = now.UTC()
	nk, err := m.toStored(kid, true, now)
	if err != nil {
		return "", err
	}
	err = st.UpdateKeys(ctx, func(keys []storage.Key) ([]storage.Key, error) {
		out := make([]storage.Key, 0, len(keys)+1)
		for _, k := range keys {
			if k.ID == kid {
				return nil, fmt.Errorf("%w: kid %s already stored", ErrCorruptStore, kid)
			}
			if k.Alg == alg && k.Active {
				k.Active = false
				k.Retired = now
			}
			out = append(out, k)
		}
		return append(out, nk), nil
	})
	if err != nil {
		return "", fmt.Errorf("keys: Rotate %s: %w", alg, err)
	}
	return kid, nil
}

func materialSize(m material) int {
	switch k := m.priv.(type) {
	case []byte:
		return len(k)
	case interface{ Size() int }: // *rsa.PrivateKey: bytes
		if m.alg != AlgDir && signingAlgs[m.alg].family == famRSA {
			return k.Size() * 8
		}
	}
	return 0
}

// PruneRetired returns keys without those retired more than keep before
// now. Choose keep at least the longest token lifetime (the refresh
// token's): a key dropped earlier makes its live tokens fail to verify.
// Active keys are always kept. Use it inside UpdateKeys:
//
//	st.UpdateKeys(ctx, func(k []storage.Key) ([]storage.Key, error) {
//		return keys.PruneRetired(k, now, 30*24*time.Hour), nil
//	})
func PruneRetired(keys []storage.Key, now time.Time, keep time.Duration) []storage.Key {
	out := make([]storage.Key, 0, len(keys))
	for _, k := range keys {
		if !k.Active && !k.Retired.IsZero() && now.Sub(k.Retired) > keep {
			continue
		}
		out = append(out, k)
	}
	return out
}

// ActiveKID returns the kid of alg's active key (of the dir key for
// "dir"), without building a signing key: a cheap check whether a cached
// signer is still current.
func (s *Set) ActiveKID(alg string) (string, bool) {
	e := s.cur.Load().active[alg]
	if e == nil {
		return "", false
	}
	return e.kid, true
}
