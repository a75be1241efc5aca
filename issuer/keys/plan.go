package keys

import (
	"fmt"
	"time"

	"github.com/bffgate/bffgate/issuer/storage"
)

// imported is one decoded key file.
type imported struct {
	path string
	kid  string // explicit (FileKey.KID or the JWK's kid), or ""
	m    material
}

// readImports reads and validates every key file. Errors name the file.
func readImports(files []FileKey, enc string) ([]imported, error) {
	out := make([]imported, 0, len(files))
	seen := map[string]string{} // alg -> path
	for i, f := range files {
		if f.Path == "" {
			return nil, fmt.Errorf("keys: Config.Files[%d].Path is empty", i)
		}
		priv, jwkKID, jwkAlg, err := readKeyFile(f.Path)
		if err != nil {
			return nil, fmt.Errorf("%w %s: %w", ErrBadKeyFile, f.Path, err)
		}
		alg := f.Alg
		switch {
		case alg == "" && jwkAlg == "":
			return nil, fmt.Errorf("%w %s: no algorithm: set Alg for the file (e.g. RS256, HS256, dir)", ErrBadKeyFile, f.Path)
		case alg == "":
			alg = jwkAlg
		case jwkAlg != "" && jwkAlg != alg:
			return nil, fmt.Errorf("%w %s: the JWK says alg %q but the configuration says %q", ErrBadKeyFile, f.Path, jwkAlg, alg)
		}
		kid := f.KID
		if kid == "" {
			kid = jwkKID
		} else if jwkKID != "" && jwkKID != kid {
			return nil, fmt.Errorf("%w %s: the JWK says kid %q but the configuration says %q", ErrBadKeyFile, f.Path, jwkKID, kid)
		}
		m := material{alg: alg, priv: priv}
		if err := m.validate(); err != nil {
			return nil, fmt.Errorf("%w %s: %w", ErrBadKeyFile, f.Path, err)
		}
		if alg == AlgDir {
			if enc == "" {
				return nil, fmt.Errorf("%w %s: a dir (JWE) key is configured but Config.Encryption is empty", ErrBadKeyFile, f.Path)
			}
			if b, _ := m.symmetric(); len(b) != encKeySize[enc] {
				return nil, fmt.Errorf("%w %s: %w: %s needs a dir key of exactly %d bytes, the file holds %d", ErrBadKeyFile, f.Path, ErrWeakKey, enc, encKeySize[enc], len(b))
			}
		}
		if prev, dup := seen[alg]; dup {
			return nil, fmt.Errorf("%w %s: %s already has a key file (%s); only one key per alg can be active", ErrBadKeyFile, f.Path, alg, prev)
		}
		seen[alg] = f.Path
		out = append(out, imported{path: f.Path, kid: kid, m: m})
	}
	return out, nil
}

type event struct{ what, alg, kid string }

// planner computes the stored set Open wants from what is stored.
type planner struct {
	s       *Set
	imports []imported
}

func (s *Set) planner(imports []imported) planner { return planner{s: s, imports: imports} }

// required lists the algs that must have an active key: the signing algs,
// and dir when JWE is configured.
func (p planner) required() []string {
	req := append([]string(nil), p.s.algs...)
	if p.s.enc != "" {
		req = append(req, AlgDir)
	}
	return req
}

// missing returns the required algs that have no usable active key in
// list and no imported key: what apply will have to generate.
func (p planner) missing(list []storage.Key) []string {
	var out []string
	for _, alg := range p.required() {
		if p.importFor(alg) {
			continue
		}
		if !p.hasActive(list, alg) {
			out = append(out, alg)
		}
	}
	return out
}

func (p planner) importFor(alg string) bool {
	for _, im := range p.imports {
		if im.m.alg == alg {
			return true
		}
	}
	return false
}

func (p planner) hasActive(list []storage.Key, alg string) bool {
	for _, k := range list {
		if k.Alg != alg || !k.Active {
			continue
		}
		if alg != AlgDir {
			return true
		}
		m, err := fromStored(k)
		if err != nil {
			return false
		}
		if b, _ := m.symmetric(); len(b) == encKeySize[p.s.enc] {
			return true
		}
	}
	return false
}

// apply returns list with the imports made active and a generated key
// for every required alg still lacking one (taken from pregen when there).
// It runs inside UpdateKeys and may run more than once (a Redis
// transaction retries): it depends only on its arguments.
func (p planner) apply(list []storage.Key, pregen map[string]material, now time.Time) ([]storage.Key, []event, error) {
	out := make([]storage.Key, len(list))
	copy(out, list)
	mats := make([]material, len(out))
	kids := make(map[string]int, len(out))
	for i, k := range out {
		m, err := fromStored(k)
		if err != nil {
			return nil, nil, err
		}
		if k.Alg != m.alg {
			return nil, nil, fmt.Errorf("%w: kid %s", ErrCorruptStore, k.ID)
		}
		if _, dup := kids[k.ID]; dup {
			return nil, nil, fmt.Errorf("%w: two keys with kid %s", ErrCorruptStore, k.ID)
		}
		kids[k.ID] = i
		mats[i] = m
	}
	var events []event

	activeIdx := func(alg string) int {
		idx := -1
		for i, k := range out {
			if k.Alg == alg && k.Active && (idx < 0 || k.Created.After(out[idx].Created)) {
				idx = i
			}
		}
		return idx
	}
	retire := func(alg string, except int) {
		for i := range out {
			if out[i].Alg == alg && out[i].Active && i != except {
				out[i].Active = false
				out[i].Retired = now
				events = append(events, event{"retired", alg, out[i].ID})
			}
		}
	}
	// One active key per alg: if a bug or a race left two, keep the newest.
	for _, k := range list {
		if k.Active {
			retire(k.Alg, activeIdx(k.Alg))
		}
	}

	add := func(m material, kid, what string) error {
		if kid == "" {
			var err error
			if kid, err = m.kid(); err != nil {
				return err
			}
		}
		if i, used := kids[kid]; used {
			return fmt.Errorf("%w: kid %s is already used by a stored %s key", ErrKeyMismatch, kid, out[i].Alg)
		}
		sk, err := m.toStored(kid, true, now)
		if err != nil {
			return err
		}
		retire(m.alg, -1)
		kids[kid] = len(out)
		out = append(out, sk)
		mats = append(mats, m)
		events = append(events, event{what, m.alg, kid})
		return nil
	}

	for _, im := range p.imports {
		found := -1
		for i := range out {
			if out[i].Alg == im.m.alg && mats[i].sameKey(im.m) {
				found = i
				break
			}
		}
		if found < 0 {
			if err := add(im.m, im.kid, "imported"); err != nil {
				return nil, nil, fmt.Errorf("%w %s: %w", ErrBadKeyFile, im.path, err)
			}
			continue
		}
		if im.kid != "" && out[found].ID != im.kid {
			return nil, nil, fmt.Errorf("%w %s: this key is already stored under kid %s; set KID to %s or leave it empty", ErrBadKeyFile, im.path, out[found].ID, out[found].ID)
		}
		if !out[found].Active {
			retire(im.m.alg, found)
			out[found].Active = true
			out[found].Retired = time.Time{}
			events = append(events, event{"reactivated from file", im.m.alg, out[found].ID})
		}
	}

	for _, alg := range p.required() {
		if i := activeIdx(alg); i >= 0 {
			if alg != AlgDir {
				continue
			}
			if b, _ := mats[i].symmetric(); len(b) == encKeySize[p.s.enc] {
				continue
			}
		}
		m, ok := pregen[alg]
		if !ok {
			var err error
			if m, err = generate(alg, p.s.sizeFor(alg)); err != nil {
				return nil, nil, err
			}
		}
		if err := add(m, "", "generated"); err != nil {
			return nil, nil, err
		}
	}
	return out, events, nil
}
