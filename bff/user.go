package bff

import (
	"bytes"
	"encoding/json"
	"math"
	"net/url"
	"sort"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/session"
)

// claim is one entry of the /bff/user body, as Duende BFF writes it.
type claim struct {
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// protocolClaims are ID token claims about the token rather than the user;
// /bff/user leaves them out, as ASP.NET's OpenID Connect handler (and so
// Duende BFF) does.
var protocolClaims = map[string]bool{
	"nonce": true, "aud": true, "azp": true, "acr": true, "iss": true, "iat": true, "nbf": true,
	"exp": true, "at_hash": true, "c_hash": true, "s_hash": true, "ipaddr": true, "platf": true, "ver": true,
	sessionStateKey: true,
}

// sessionStateKey holds the callback's session_state (OpenID Connect
// Session Management) inside the stored claims; /bff/user answers it as
// bff:session_state.
const sessionStateKey = "bff:session_state"

// user answers GET /bff/user: the session's claims as Duende BFF's array of
// {type, value}, plus bff:logout_url, bff:session_expires_in and
// bff:session_state. ?slide=false reads the session without extending its
// idle deadline (for an SPA polling the session).
func (g *Gateway) user(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	handle, s, err := g.current(c)
	if err != nil {
		return writeError(c, asError(err))
	}
	if s == nil {
		return writeError(c, g.loginRequired())
	}
	if c.Query("slide") != "false" {
		if _, s, err = g.slide(c, handle, s); err != nil {
			return writeError(c, asError(err))
		}
		if s == nil {
			return writeError(c, g.loginRequired())
		}
	}
	return c.JSON(g.userClaims(s))
}

func (g *Gateway) loginRequired() *Error {
	e := newError(fiber.StatusUnauthorized, "login_required",
		"there is no session; send the user to login_url (a top-level navigation, not a fetch)")
	e.LoginURL = g.base + "/login"
	return e
}

// asError returns err as an *Error (a generic 500 for anything else).
func asError(err error) *Error {
	if e, ok := err.(*Error); ok {
		return e
	}
	return newError(fiber.StatusInternalServerError, "server_error", "the gateway failed to answer; the error is in its log")
}

// userClaims builds the /bff/user body. Claims keep their JSON types;
// an array claim becomes one entry per element, as in .NET.
func (g *Gateway) userClaims(s *session.Session) []claim {
	var m map[string]json.RawMessage
	_ = json.Unmarshal(s.Claims, &m) // stored by the gateway itself
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]claim, 0, len(m)+3)
	for _, k := range keys {
		if protocolClaims[k] {
			continue
		}
		raw := bytes.TrimSpace(m[k])
		if len(raw) > 0 && raw[0] == '[' {
			var arr []json.RawMessage
			if json.Unmarshal(raw, &arr) == nil {
				for _, v := range arr {
					out = append(out, claim{k, json.RawMessage(v)})
				}
				continue
			}
		}
		out = append(out, claim{k, json.RawMessage(raw)})
	}
	out = append(out, claim{"bff:logout_url", g.base + "/logout?sid=" + url.QueryEscape(logoutSID(s))})
	left := s.ExpiresAt().Sub(g.now()).Seconds()
	if s.ExpiresAt().IsZero() {
		left = 0
	}
	out = append(out, claim{"bff:session_expires_in", int64(math.Max(0, math.Floor(left)))})
	if raw, ok := m[sessionStateKey]; ok {
		out = append(out, claim{"bff:session_state", json.RawMessage(raw)})
	}
	return out
}
