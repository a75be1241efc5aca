package bff

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/internal/edge"
	"github.com/bffgate/bffgate/internal/obs"
)

// MCPConfig is a route's Model Context Protocol policy: the route fronts
// an MCP server (Streamable HTTP), and the gateway reads each JSON-RPC
// request (method, tool name) to decide it before the server sees it.
// Its yaml tags are the keys of gateway.routes[].mcp.
type MCPConfig struct {
	// Enabled makes the route an MCP route without rules (JSON-RPC
	// checks, the Mcp-Method/Mcp-Name agreement, an audit line per tool
	// call). Any rule below enables it too.
	Enabled bool `yaml:"enabled"`
	// Methods allowed or denied by JSON-RPC method name (globs as in
	// path.Match: "resources/*").
	Methods MCPRules `yaml:"methods"`
	// Tools allowed or denied by tool name (tools/call params.name), and
	// the scopes a bearer token needs for some of them.
	Tools MCPToolRules `yaml:"tools"`
}

// MCPRules allow and deny names. A name passes when no Deny pattern
// matches it and, if Allow is set, one Allow pattern does.
type MCPRules struct {
	Allow []string `yaml:"allow"`
	Deny  []string `yaml:"deny"`
}

// MCPToolRules are the tool rules: Allow and Deny over tool names, and
// Scopes mapping a tool name pattern to the scopes a bearer token must
// hold (all of them) to call a matching tool; a token without them gets
// 403 insufficient_scope naming them (step-up).
type MCPToolRules struct {
	Allow  []string            `yaml:"allow"`
	Deny   []string            `yaml:"deny"`
	Scopes map[string][]string `yaml:"scopes"`
}

func (m MCPConfig) enabled() bool {
	return m.Enabled || len(m.Methods.Allow)+len(m.Methods.Deny)+len(m.Tools.Allow)+len(m.Tools.Deny)+len(m.Tools.Scopes) > 0
}

// mcpPolicy is a compiled MCPConfig.
type mcpPolicy struct {
	methods MCPRules
	tools   MCPRules
	scopes  [][2]any // pattern string, scopes []string; in sorted pattern order
}

// MCPDeniedCode is the JSON-RPC error code of a request the gateway's
// MCP policy denies (in the range JSON-RPC 2.0 §5.1 leaves to servers).
const MCPDeniedCode = -32003

func checkPatterns(at string, ps []string) []error {
	var errs []error
	for j, p := range ps {
		if _, err := path.Match(p, ""); err != nil || p == "" {
			errs = append(errs, ferr(fmt.Sprintf("%s[%d]", at, j), "%q is not a name or a glob pattern (path.Match: * ? [a-z])", p))
		}
	}
	return errs
}

// checkMCP validates routes[i].mcp.
func checkMCPConfig(i int, m MCPConfig) []error {
	at := func(p string) string { return fmt.Sprintf("routes[%d].mcp.%s", i, p) }
	var errs []error
	errs = append(errs, checkPatterns(at("methods.allow"), m.Methods.Allow)...)
	errs = append(errs, checkPatterns(at("methods.deny"), m.Methods.Deny)...)
	errs = append(errs, checkPatterns(at("tools.allow"), m.Tools.Allow)...)
	errs = append(errs, checkPatterns(at("tools.deny"), m.Tools.Deny)...)
	for _, p := range sortedKeys(m.Tools.Scopes) {
		if _, err := path.Match(p, ""); err != nil || p == "" {
			errs = append(errs, ferr(at("tools.scopes"), "%q is not a tool name or a glob pattern", p))
		}
		if len(m.Tools.Scopes[p]) == 0 {
			errs = append(errs, ferr(at("tools.scopes."+p), "lists no scope"))
		}
		for j, s := range m.Tools.Scopes[p] {
			if !validScopeToken(s) {
				errs = append(errs, ferr(at(fmt.Sprintf("tools.scopes.%s[%d]", p, j)), "%q is not a scope token", s))
			}
		}
	}
	return errs
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func compileMCP(m MCPConfig) (*mcpPolicy, error) {
	if !m.enabled() {
		return nil, nil
	}
	if errs := checkMCPConfig(0, m); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	p := &mcpPolicy{methods: m.Methods, tools: MCPRules{Allow: m.Tools.Allow, Deny: m.Tools.Deny}}
	for _, k := range sortedKeys(m.Tools.Scopes) {
		p.scopes = append(p.scopes, [2]any{k, slices.Clone(m.Tools.Scopes[k])})
	}
	return p, nil
}

func matchAny(ps []string, name string) bool {
	for _, p := range ps {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// allows reports whether name passes r, and the rule that decided.
func (r MCPRules) allows(name string) (bool, string) {
	if matchAny(r.Deny, name) {
		return false, "deny"
	}
	if len(r.Allow) > 0 && !matchAny(r.Allow, name) {
		return false, "allow"
	}
	return true, ""
}

// toolScopes are the scopes a call of tool needs.
func (p *mcpPolicy) toolScopes(tool string) []string {
	var out []string
	for _, e := range p.scopes {
		if ok, _ := path.Match(e[0].(string), tool); ok {
			for _, s := range e[1].([]string) {
				if !slices.Contains(out, s) {
					out = append(out, s)
				}
			}
		}
	}
	return out
}

// allScopes lists every scope a tool rule names.
func (p *mcpPolicy) allScopes() []string {
	var out []string
	for _, e := range p.scopes {
		for _, s := range e[1].([]string) {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// rpcRequest is the part of a JSON-RPC 2.0 message the gateway reads.
type rpcRequest struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  *string         `json:"method"`
	Params  json.RawMessage `json:"params"`
}

type rpcParams struct {
	Name string `json:"name"`
	URI  string `json:"uri"`
}

// rpcName is the Mcp-Name of a request (MCP 2026-07-28, SEP-2243):
// params.name of tools/call and prompts/get, params.uri of resources/read,
// subscribe and unsubscribe.
func rpcName(method string, params json.RawMessage) (string, bool) {
	var p rpcParams
	if len(params) > 0 && json.Unmarshal(params, &p) != nil {
		return "", false
	}
	switch method {
	case "tools/call", "prompts/get":
		return p.Name, true
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		return p.URI, true
	}
	return "", true
}

// headerValue decodes an Mcp-Name header: plain, or the
// =?base64?...?= form for names that are not plain ASCII.
func headerValue(v string) (string, bool) {
	if strings.HasPrefix(v, "=?base64?") && strings.HasSuffix(v, "?=") {
		b, err := base64.StdEncoding.DecodeString(v[len("=?base64?") : len(v)-2])
		if err != nil {
			return "", false
		}
		return string(b), true
	}
	return v, true
}

// rpcError writes a JSON-RPC error response (JSON-RPC 2.0 §5) with
// status: the id echoed (null when the request had none readable).
func rpcError(c *fiber.Ctx, status int, id json.RawMessage, code int, msg string) error {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	body, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}{JSONRPC: "2.0", ID: id, Error: struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{code, msg}})
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Status(status).Send(body)
}

// JSON-RPC 2.0 §5.1 error codes.
const (
	rpcParseError     = -32700
	rpcInvalidRequest = -32600
)

// checkMCP reads the JSON-RPC request of an MCP route (a POST; GET
// streams and DELETE pass) from the bounded body, checks the Mcp-Method
// and Mcp-Name headers against it, and decides the route's MCP policy.
// It reports true when it answered; otherwise the body is back in the
// request for the proxy. p is the bearer caller (nil for a session).
func (g *Gateway) checkMCP(c *fiber.Ctx, route string, b *bearerRoute, m *mcpPolicy, p *principal, sessionSub string) (bool, error) {
	if c.Method() != fiber.MethodPost {
		return false, nil
	}
	ctx := c.UserContext()
	limit := int64(10 << 20)
	if r, ok := g.proxy.Match(c.Path()); ok && r.MaxBodyBytes > 0 {
		limit = r.MaxBodyBytes
	}
	body, err := edge.ReadBody(c, int(limit))
	if err != nil {
		var ee *edge.Error
		if errors.As(err, &ee) {
			return true, writeError(c, newError(ee.Status, ee.Kind, ee.Description))
		}
		return true, writeError(c, newError(fiber.StatusBadRequest, "invalid_body", "the request body could not be read"))
	}
	c.Request().SetBody(body)
	decision := func(method, d string) {
		g.mcpCalls.WithLabelValues(route, method, d).Inc()
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] == '[' {
		decision("batch", "invalid")
		return true, rpcError(c, fiber.StatusBadRequest, nil, rpcInvalidRequest,
			"JSON-RPC batches are not accepted here (MCP removed them in 2025-06-18); send one request per POST")
	}
	var req rpcRequest
	if err := json.Unmarshal(body, &req); err != nil {
		decision("", "invalid")
		return true, rpcError(c, fiber.StatusBadRequest, nil, rpcParseError, "the body is not a JSON-RPC message")
	}
	hm := string(c.Request().Header.Peek("Mcp-Method"))
	if req.Method == nil {
		// A response to a server's request (elicitation, sampling):
		// nothing to decide.
		if hm != "" {
			decision("", "invalid")
			return true, rpcError(c, fiber.StatusBadRequest, req.ID, rpcInvalidRequest, "Mcp-Method is set on a message without a method")
		}
		return false, nil
	}
	method := *req.Method
	label := method
	if len(label) > 64 || !isPlainLabel(label) {
		label = "other"
	}
	name, ok := rpcName(method, req.Params)
	if !ok {
		decision(label, "invalid")
		return true, rpcError(c, fiber.StatusBadRequest, req.ID, rpcInvalidRequest, "params is not an object")
	}
	if hm != "" && hm != method {
		decision(label, "invalid")
		return true, rpcError(c, fiber.StatusBadRequest, req.ID, rpcInvalidRequest, "the Mcp-Method header does not match the body's method")
	}
	if hn := c.Request().Header.Peek("Mcp-Name"); len(hn) > 0 {
		v, ok := headerValue(string(hn))
		if !ok || v != name {
			decision(label, "invalid")
			return true, rpcError(c, fiber.StatusBadRequest, req.ID, rpcInvalidRequest, "the Mcp-Name header does not match the body's params")
		}
	}
	client, sub := "", sessionSub
	if p != nil {
		client, sub = p.ClientID, p.Subject
	}
	tool := ""
	if method == "tools/call" {
		tool = name
	}
	audit := func(d, rule string) {
		if method != "tools/call" && d == "allowed" {
			return
		}
		g.log.LogAttrs(ctx, slog.LevelInfo, "mcp call", slog.String("request_id", obs.RequestID(c)),
			slog.String("route", route), slog.String("client_id", client), slog.String("sub", sub),
			slog.String("method", method), slog.String("tool", tool), slog.String("decision", d), slog.String("rule", rule))
	}
	if ok, rule := m.methods.allows(method); !ok {
		decision(label, "denied")
		audit("denied", "methods."+rule)
		return true, rpcError(c, fiber.StatusOK, req.ID, MCPDeniedCode, "the gateway's policy does not allow "+method+" on this server")
	}
	if method != "tools/call" {
		decision(label, "allowed")
		return false, nil
	}
	if ok, rule := m.tools.allows(tool); !ok {
		decision(label, "denied")
		audit("denied", "tools."+rule)
		return true, rpcError(c, fiber.StatusOK, req.ID, MCPDeniedCode, "the gateway's policy does not allow the tool "+clipName(tool)+" for this client")
	}
	if need := m.toolScopes(tool); p != nil && len(need) > 0 && !p.hasScopes(need) {
		decision(label, "insufficient_scope")
		audit("insufficient_scope", "tools.scopes")
		return true, g.insufficientScope(c, b, p, need, tool)
	}
	decision(label, "allowed")
	audit("allowed", "")
	return false, nil
}

func isPlainLabel(s string) bool {
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '/' || b == '_' || b == '-' || b == '.') {
			return false
		}
	}
	return true
}

// clipName is a tool name fit for an error message.
func clipName(s string) string {
	if len(s) > 80 {
		s = s[:80]
	}
	return fmt.Sprintf("%q", s)
}
