package proxy_test

import (
	"context"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/bff/proxy"
)

// sessionTokens is a TokenSource over one request's session: the access
// token it holds, and a refresh when the upstream refuses it.
type sessionTokens struct {
	c *fiber.Ctx
}

func (s sessionTokens) Token(ctx context.Context) (string, error) {
	return "token-from-the-session", nil
}

func (s sessionTokens) Renew(ctx context.Context, refused string) (string, error) {
	// Refresh the session's tokens here. An error leaves the response
	// untouched, for the handler to answer (401 session_expired).
	return "refreshed-token", nil
}

// A gateway handler: match the route and forward with the session's
// token; the proxy refreshes once and replays the request when the
// upstream answers invalid_token.
func Example() {
	p, err := proxy.New(proxy.Config{
		Routes:         []proxy.Route{{Prefix: "/api/", Upstream: "http://orders.internal:8080/v1", StripPrefix: true}},
		GatewayCookies: []string{"__Host-bff"},
	})
	if err != nil {
		panic(err) // in a real program: report the misconfiguration and exit
	}

	app := fiber.New()
	app.All("/api/*", func(c *fiber.Ctx) error {
		r, ok := p.Match(c.Path())
		if !ok {
			return fiber.ErrNotFound
		}
		if err := p.ForwardWith(c, r, sessionTokens{c}); err != nil {
			return c.Status(fiber.StatusUnauthorized).JSON(fiber.Map{"error": "session_expired"})
		}
		return nil
	})
	_ = app
}
