package bff

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"sort"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gorilla/securecookie"
)

// flowTTL is how long a login may take between /bff/login and
// /bff/callback.
const flowTTL = 10 * time.Minute

// flowState is what one login in progress needs at the callback. It is
// sealed (AES + HMAC, the cookie name under the MAC) into its own cookie.
type flowState struct {
	State     string `json:"s"`
	Verifier  string `json:"v"`
	Nonce     string `json:"n"`
	ReturnURL string `json:"r"`
	Created   int64  `json:"c"`
	// Frontend is the frontend that started the login: a flow opens only
	// at that frontend's callback (its cookie name, under the MAC, is
	// per frontend too).
	Frontend string `json:"f,omitempty"`
}

// flowSealer seals and opens flow cookies with a rotation list of keys.
type flowSealer struct {
	frontend string
	codecs   []securecookie.Codec
	jar      cookieJar
	max      int
	now      func() time.Time
}

func newFlowSealer(keys []KeyPair, jar cookieJar, maxFlows int, now func() time.Time) *flowSealer {
	codecs := make([]securecookie.Codec, 0, len(keys))
	for _, k := range keys {
		sc := securecookie.New(k.Hash, k.Block)
		sc.SetSerializer(securecookie.JSONEncoder{})
		sc.MaxAge(int(flowTTL / time.Second))
		sc.MaxLength(4096)
		codecs = append(codecs, sc)
	}
	return &flowSealer{codecs: codecs, jar: jar, max: maxFlows, now: now}
}

// flowCookieName names the flow cookie of state: a prefix of the state's
// SHA-256, so that the callback finds the one flow among several tabs'
// without the cookie name revealing the state.
func (f *flowSealer) flowCookieName(state string) string {
	sum := sha256.Sum256([]byte(state))
	return f.jar.flowPfx + hex.EncodeToString(sum[:])[:8]
}

// randomToken returns n random bytes, base64url without padding.
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// start seals a new flow into its cookie, first deleting the oldest flow
// cookies so that at most max remain with the new one.
func (f *flowSealer) start(c *fiber.Ctx, st *flowState) error {
	name := f.flowCookieName(st.State)
	value, err := securecookie.EncodeMulti(name, st, f.codecs...)
	if err != nil {
		return err
	}
	f.prune(c, f.max-1)
	f.jar.set(c, name, value, f.now().Add(flowTTL))
	return nil
}

// prune deletes the request's flow cookies beyond keep, oldest first (and
// undecodable ones before any live one).
func (f *flowSealer) prune(c *fiber.Ctx, keep int) {
	type entry struct {
		name    string
		created int64
	}
	var flows []entry
	c.Request().Header.VisitAllCookie(func(k, v []byte) {
		if !strings.HasPrefix(string(k), f.jar.flowPfx) {
			return
		}
		name := string(k)
		var st flowState
		created := int64(-1) // undecodable: first to go
		if securecookie.DecodeMulti(name, string(v), &st, f.codecs...) == nil {
			created = st.Created
		}
		flows = append(flows, entry{name, created})
	})
	if len(flows) <= keep {
		return
	}
	sort.SliceStable(flows, func(i, j int) bool { return flows[i].created < flows[j].created })
	for _, e := range flows[:len(flows)-keep] {
		f.jar.clear(c, e.name)
	}
}

// find opens the flow cookie for state. ok is false when there is none, it
// does not open (expired, tampered, another key), or its state differs
// (compared in constant time).
func (f *flowSealer) find(c *fiber.Ctx, state string) (st flowState, name string, ok bool) {
	if state == "" || len(state) > 512 {
		return st, "", false
	}
	name = f.flowCookieName(state)
	raw := c.Cookies(name)
	if raw == "" {
		return st, name, false
	}
	if err := securecookie.DecodeMulti(name, raw, &st, f.codecs...); err != nil {
		return flowState{}, name, false
	}
	if subtle.ConstantTimeCompare([]byte(st.State), []byte(state)) != 1 || st.Frontend != f.frontend {
		return flowState{}, name, false
	}
	created := time.Unix(st.Created, 0)
	if now := f.now(); now.Sub(created) > flowTTL || created.Sub(now) > time.Minute {
		return flowState{}, name, false
	}
	return st, name, true
}

// any reports whether the request carries any flow cookie.
func (f *flowSealer) any(c *fiber.Ctx) bool {
	found := false
	c.Request().Header.VisitAllCookie(func(k, _ []byte) {
		if strings.HasPrefix(string(k), f.jar.flowPfx) {
			found = true
		}
	})
	return found
}
