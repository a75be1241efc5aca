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
			if err := checkResourceScope(s); err != nil {
				errs = append(errs, ferr(at(fmt.Sprintf("tools.scopes.%s[%d]", p, j)), "%v", err))
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

// rpcCall is what the gateway reads of a JSON-RPC 2.0 message.
type rpcCall struct {
	ID      json.RawMessage // as sent; nil when absent
	Request bool            // it has a method (a request or a notification)
	Method  string
	// Name is the Mcp-Name of the request (MCP 2026-07-28, SEP-2243):
	// params.name of tools/call and prompts/get, params.uri of
	// resources/read, subscribe and unsubscribe; "" otherwise.
	Name string
}

// rpcFault is a message the gateway refuses: a JSON-RPC error with
// Status.
type rpcFault struct {
	Status int
	Code   int
	Msg    string
}

// parseRPC reads one JSON-RPC message and checks the Mcp-Method and
// Mcp-Name headers (empty: absent) against it.
//
// Members are matched by their exact names, and the last of duplicates
// wins, as JavaScript's JSON.parse does: encoding/json's struct decoding
// matches names without regard to case, so {"params":{"name":"a"},
// "Params":{"name":"b"}} would be tool b here and tool a at a Node MCP
// server, and a denied tool would pass under an allowed name.
func parseRPC(body []byte, hdrMethod, hdrName string) (rpcCall, *rpcFault) {
	var call rpcCall
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] == '[' {
		return call, &rpcFault{fiber.StatusBadRequest, rpcInvalidRequest,
			"JSON-RPC batches are not accepted here (MCP removed them in 2025-06-18); send one request per POST"}
	}
	var msg map[string]json.RawMessage
	if err := json.Unmarshal(body, &msg); err != nil || msg == nil {
		return call, &rpcFault{fiber.StatusBadRequest, rpcParseError, "the body is not a JSON-RPC message (a JSON object)"}
	}
	if id, ok := msg["id"]; ok {
		call.ID = id
		switch id[0] {
		case '"', 'n', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		default:
			call.ID = nil
			return call, &rpcFault{fiber.StatusBadRequest, rpcInvalidRequest, "the id is neither a string, a number nor null"}
		}
	}
	raw, ok := msg["method"]
	if !ok {
		// A response to a server's request (elicitation, sampling):
		// nothing to decide.
		if hdrMethod != "" || hdrName != "" {
			return call, &rpcFault{fiber.StatusBadRequest, rpcInvalidRequest, "Mcp-Method or Mcp-Name is set on a message without a method"}
		}
		return call, nil
	}
	call.Request = true
	if string(raw) == "null" || json.Unmarshal(raw, &call.Method) != nil {
		return call, &rpcFault{fiber.StatusBadRequest, rpcInvalidRequest, "the method is not a string"}
	}
	field := ""
	switch call.Method {
	case "tools/call", "prompts/get":
		field = "name"
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		field = "uri"
	}
	if field != "" {
		var params map[string]json.RawMessage
		if p, ok := msg["params"]; !ok || json.Unmarshal(p, &params) != nil || params == nil {
			return call, &rpcFault{fiber.StatusBadRequest, rpcInvalidRequest, "params is not an object"}
		}
		if v, ok := params[field]; !ok || string(v) == "null" || json.Unmarshal(v, &call.Name) != nil {
			return call, &rpcFault{fiber.StatusBadRequest, rpcInvalidRequest, "params." + field + " is not a string"}
		}
	}
	if hdrMethod != "" && hdrMethod != call.Method {
		return call, &rpcFault{fiber.StatusBadRequest, rpcInvalidRequest, "the Mcp-Method header does not match the body's method"}
	}
	if hdrName != "" {
		if v, ok := headerValue(hdrName); !ok || v != call.Name {
			return call, &rpcFault{fiber.StatusBadRequest, rpcInvalidRequest, "the Mcp-Name header does not match the body's params"}
		}
	}
	return call, nil
}

// headerValue decodes an Mcp-Name header: plain, or the
// =?base64?...?= form for names that are not plain ASCII.
func headerValue(v string) (string, bool) {
	const pre, suf = "=?base64?", "?="
	if strings.HasPrefix(v, pre) {
		if len(v) < len(pre)+len(suf) || !strings.HasSuffix(v, suf) {
			return "", false
		}
		b, err := base64.StdEncoding.DecodeString(v[len(pre) : len(v)-len(suf)])
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
	call, fault := parseRPC(body, string(c.Request().Header.Peek("Mcp-Method")), string(c.Request().Header.Peek("Mcp-Name")))
	method := call.Method
	label := method
	if !mcpMethods[label] {
		label = "other" // a client chooses it: no label per unknown name
	}
	if fault != nil {
		decision(label, "invalid")
		g.log.LogAttrs(ctx, slog.LevelInfo, "mcp request refused", slog.String("request_id", obs.RequestID(c)),
			slog.String("route", route), slog.String("method", label), slog.String("reason", fault.Msg))
		return true, rpcError(c, fault.Status, call.ID, fault.Code, fault.Msg)
	}
	if !call.Request {
		return false, nil
	}
	name := call.Name
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
			slog.String("method", clipLog(method)), slog.String("tool", clipLog(tool)), slog.String("decision", d), slog.String("rule", rule))
	}
	if ok, rule := m.methods.allows(method); !ok {
		decision(label, "denied")
		audit("denied", "methods."+rule)
		return true, rpcError(c, fiber.StatusOK, call.ID, MCPDeniedCode, "the gateway's policy does not allow "+method+" on this server")
	}
	if method != "tools/call" {
		decision(label, "allowed")
		return false, nil
	}
	if ok, rule := m.tools.allows(tool); !ok {
		decision(label, "denied")
		audit("denied", "tools."+rule)
		return true, rpcError(c, fiber.StatusOK, call.ID, MCPDeniedCode, "the gateway's policy does not allow the tool "+clipName(tool)+" for this client")
	}
	if need := m.toolScopes(tool); p != nil && len(need) > 0 && !b.satisfies(p.Scopes, need) {
		decision(label, "insufficient_scope")
		audit("insufficient_scope", "tools.scopes")
		return true, g.insufficientScope(c, b, p, need, tool)
	}
	decision(label, "allowed")
	audit("allowed", "")
	return false, nil
}

// mcpMethods are the client-to-server methods of MCP (2025-06-18 to
// 2026-07-28), the metric labels the gateway keeps; any other is "other".
var mcpMethods = map[string]bool{
	"": true, "initialize": true, "ping": true, "tools/list": true, "tools/call": true,
	"resources/list": true, "resources/templates/list": true, "resources/read": true,
	"resources/subscribe": true, "resources/unsubscribe": true, "prompts/list": true, "prompts/get": true,
	"completion/complete": true, "logging/setLevel": true, "tasks/get": true, "tasks/list": true,
	"tasks/result": true, "tasks/cancel": true, "notifications/initialized": true,
	"notifications/cancelled": true, "notifications/progress": true, "notifications/roots/list_changed": true,
}

// clipName is a tool name fit for an error message.
func clipName(s string) string {
	if len(s) > 80 {
		s = s[:80]
	}
	return fmt.Sprintf("%q", s)
}

// clipLog bounds a client-chosen name in a log line (a body may be
// megabytes): its first 256 bytes, marked when cut.
func clipLog(s string) string {
	if len(s) > 256 {
		return s[:256] + "..."
	}
	return s
}
