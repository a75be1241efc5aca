package proxy_test

import (
	"errors"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/bff/proxy"
)

// A gateway handler: match the route, forward with the session's token,
// and on an upstream invalid_token refresh once and forward again.
func Example() {
	p, err := proxy.New(proxy.Config{
		Routes:         []proxy.Route{{Prefix: "/api/", Upstream: "http://orders.internal:8080/v1", StripPrefix: true}},
		GatewayCookies: []string{"__Host-bff"},
	})
	if err != nil {
		panic(err) // in a real program: report the misconfiguration and exit
	}
	accessToken := func(c *fiber.Ctx, forceRefresh bool) (string, error) { return "token-from-the-session", nil }

	app := fiber.New()
	app.All("/api/*", func(c *fiber.Ctx) error {
		r, ok := p.Match(c.Path())
		if !ok {
			return fiber.ErrNotFound
		}
		tok, err := accessToken(c, false)
		if err != nil {
			return err
		}
		err = p.Forward(c, r, tok)
		if errors.Is(err, proxy.ErrInvalidToken) {
			if tok, err = accessToken(c, true); err != nil {
				return err
			}
			err = p.Forward(c, r, tok)
		}
		return err
	})
	_ = app
}
