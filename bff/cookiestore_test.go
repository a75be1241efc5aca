package bff

import (
	"github.com/bffgate/bffgate/session"
	sessionbolt "github.com/bffgate/bffgate/session/bolt"
	"github.com/bffgate/bffgate/session/cookie"
)

// newCookieStore opens a cookie session store whose key pairs are keys
// (hash, block, hash, block, ...: the first pair seals, all open) and whose
// ended sessions are remembered in e's bbolt file.
func newCookieStore(e *env, keys [][]byte) session.Store {
	e.t.Helper()
	var pairs []cookie.KeyPair
	for i := 0; i+1 < len(keys); i += 2 {
		pairs = append(pairs, cookie.KeyPair{Hash: keys[i], Block: keys[i+1]})
	}
	s, err := cookie.New(cookie.Config{Keys: pairs, Ended: sessionbolt.NewEnded(e.db), Now: e.clock.Now})
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}
