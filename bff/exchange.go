package bff

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/bff/tokens"
	"github.com/bffgate/bffgate/internal/obs"
)

// RouteToken says which token a route sends upstream. Its yaml tags are
// the keys of gateway.routes[].token.
type RouteToken struct {
	// Exchange, when it names a target, sends a token exchanged for it
	// (RFC 8693) instead of the session's own access token.
	Exchange RouteExchange `yaml:"exchange"`
}

// RouteExchange is a route's token exchange (RFC 8693 §2.1): the
// session's access token is traded at the provider's token endpoint for a
// token whose aud is Audience and/or Resource, narrowed to Scope. The
// upstream never receives the session's own token.
type RouteExchange struct {
	// Audience is the logical name of the target (the audience
	// parameter), e.g. orders-api.
	Audience string `yaml:"audience"`
	// Resource is the target URI (the resource parameter, RFC 8707), e.g.
	// https://orders.example.com/.
	Resource string `yaml:"resource"`
	// Scope narrows the exchanged token, e.g. "orders:read"; empty asks
	// for the provider's default (bffgate's issuer: the session's scope).
	Scope string `yaml:"scope"`
	// Actor is "" (the default: impersonation, no act claim) or
	// "gateway": the gateway sends its own client-credentials token as
	// actor_token, and the issued token names it in act (delegation).
	Actor string `yaml:"actor"`
}

// ActorGateway is RouteExchange.Actor for delegation by the gateway.
const ActorGateway = "gateway"

func (e RouteExchange) enabled() bool {
	return e.Audience != "" || e.Resource != "" || e.Scope != "" || e.Actor != ""
}

func (e RouteExchange) target() *tokens.ExchangeTarget {
	return &tokens.ExchangeTarget{Audience: e.Audience, Resource: e.Resource, Scope: e.Scope, Actor: e.Actor == ActorGateway}
}

// checkExchange validates routes[i].token.exchange.
func checkExchange(i int, r Route) []error {
	e := r.Token.Exchange
	if !e.enabled() {
		return nil
	}
	at := func(path string) string { return fmt.Sprintf("routes[%d].token.exchange.%s", i, path) }
	var errs []error
	if e.Audience == "" && e.Resource == "" {
		errs = append(errs, ferr(at("audience"), "is required (or resource): the target the exchanged token is for, e.g. orders-api"))
	}
	if e.Resource != "" {
		u, err := url.Parse(e.Resource)
		if err != nil || !u.IsAbs() || u.Fragment != "" || strings.Contains(e.Resource, "#") {
			errs = append(errs, ferr(at("resource"), "%q must be an absolute URI without a fragment (RFC 8707 section 2), e.g. https://orders.example.com/", e.Resource))
		}
	}
	if e.Scope != "" && !validScope(e.Scope) {
		errs = append(errs, ferr(at("scope"), "%q holds characters RFC 6749 section 3.3 does not allow in a scope: printable ASCII but \" and \\, separated by spaces", e.Scope))
	}
	if e.Actor != "" && e.Actor != ActorGateway {
		errs = append(errs, ferr(at("actor"), "%q must be empty (impersonation) or %q (the gateway's client-credentials token as actor_token)", e.Actor, ActorGateway))
	}
	if r.Policy != PolicyUser && r.Policy != PolicyUserOptional {
		errs = append(errs, ferr(at("audience"), "exchanges the session's token, but policy %s has no session: use policy user or user-optional", r.Policy))
	}
	return errs
}

// validScope reports whether s is scope-tokens separated by spaces, each
// of the characters RFC 6749 section 3.3 allows (NQCHAR: printable ASCII
// but '"' and '\\'): a scope the provider would refuse at every call is
// refused at start.
func validScope(s string) bool {
	for _, c := range []byte(s) {
		if c != ' ' && (c < 0x21 || c > 0x7e || c == '"' || c == '\\') {
			return false
		}
	}
	return true
}

// exchangeError turns an exchange failure into the gateway's answer:
// the provider's refusal is 403 naming the route and the reason; anything
// else is 503, as for a refresh.
func (g *Gateway) exchangeError(c *fiber.Ctx, route string, t *tokens.ExchangeTarget, sub string, err error) error {
	ctx := c.UserContext()
	var re *tokens.ExchangeRefusedError
	if errors.As(err, &re) {
		g.log.LogAttrs(ctx, slog.LevelWarn, "token exchange refused", slog.String("request_id", obs.RequestID(c)),
			slog.String("route", route), slog.String("target", t.String()), slog.String("sub", sub),
			slog.String("error", re.Code), slog.String("reason", re.Description))
		reason := re.Code
		if re.Description != "" {
			reason += ": " + re.Description
		}
		return &Error{Status: fiber.StatusForbidden, Code: "exchange_refused", Route: route,
			Description: "the provider refused to exchange the session's token for route " + route + " (" + t.String() + "): " + reason}
	}
	g.log.LogAttrs(ctx, slog.LevelWarn, "token exchange failed: provider unavailable", slog.String("request_id", obs.RequestID(c)),
		slog.String("route", route), slog.String("target", t.String()), slog.Any("err", err))
	return newError(fiber.StatusServiceUnavailable, "provider_unavailable",
		"the sign-in provider cannot be reached to exchange the session's token for route "+route+"; the session is kept, retry shortly")
}

// exchanged returns the route's exchanged token for the session t holds.
// The provider's invalid_grant (the session's token revoked, or its grant)
// forces one refresh of the session, once per access token: a revoked
// session then ends (401 session_expired) rather than answering 403 until
// its token expires, and a token revoked alone is replaced and exchanged
// again.
func (t *sessionTokens) exchanged(ctx context.Context) (string, error) {
	tok, err := t.g.tokens.Exchanged(ctx, t.s, *t.exchange)
	var re *tokens.ExchangeRefusedError
	if errors.As(err, &re) && re.Code == "invalid_grant" && t.g.tokens.RefreshOnRefusal(t.s) {
		handle, s, ferr := t.g.fresh(t.c, t.handle, t.s, true)
		if ferr != nil {
			return "", ferr
		}
		t.handle, t.s = handle, s
		tok, err = t.g.tokens.Exchanged(ctx, t.s, *t.exchange)
	}
	if err != nil {
		return "", t.g.exchangeError(t.c, t.route, t.exchange, t.s.Subject, err)
	}
	return tok, nil
}

// grantTokenExchange is the RFC 8693 grant type, as discovery lists it.
const grantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"

// warnExchange logs, at start, routes that ask for token exchange when
// the provider's discovery lists grant types without it: the exchanges
// will most likely be refused (403 exchange_refused). A provider that
// lists no grant types at all (the field is optional) is not warned
// about.
func (g *Gateway) warnExchange() {
	if len(g.exchanges) == 0 || len(g.meta.GrantTypes) == 0 || slices.Contains(g.meta.GrantTypes, grantTokenExchange) {
		return
	}
	for prefix, t := range g.exchanges {
		g.log.Warn("route asks for token exchange, which the provider does not list in grant_types_supported; its calls will likely be refused (403 exchange_refused)",
			"route", prefix, "target", t.String(), "grant_types_supported", g.meta.GrantTypes)
	}
}
