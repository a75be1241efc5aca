package authz

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/ext"
)

// Source names where a route's claims come from.
type Source string

const (
	// SourceSession (the default, "") is the session's claims, what
	// /bff/user answers: the ID token's, merged with userinfo when
	// gateway.provider.use_userinfo is on.
	SourceSession Source = ""
	// SourceIDToken is the ID token's claims only.
	SourceIDToken Source = "id_token"
	// SourceUserinfo is the session's claims with userinfo merged in; it
	// needs gateway.provider.use_userinfo.
	SourceUserinfo Source = "userinfo"
	// SourceAccessToken is the payload of the access token when it is a
	// JWT (Keycloak's realm_access.roles live there). The gateway got the
	// token from the provider's token endpoint itself, over the channel
	// it trusts for the ID token, so it reads the payload without
	// checking the signature again. An opaque access token has no claims.
	SourceAccessToken Source = "access_token"
)

// Policy is a route's authorization rules. Its yaml tags are keys of
// bffgate's gateway.routes[] entries.
//
// A request is allowed when no Deny rule matches and, if there are Allow
// rules, at least one of them matches. A Policy with no rules allows every
// request the route's token policy lets through.
type Policy struct {
	Allow []Rule `yaml:"allow"`
	Deny  []Rule `yaml:"deny"`
	// ClaimsFrom is where the rules read claims: "" (the session's),
	// id_token, userinfo or access_token.
	ClaimsFrom Source `yaml:"claims_from"`
}

// Empty reports whether p has no rules.
func (p Policy) Empty() bool { return len(p.Allow) == 0 && len(p.Deny) == 0 }

// Rule matches when every condition it sets holds (and), each list
// condition when any of its values matches (or). A rule with no condition
// is refused at Compile.
type Rule struct {
	// CEL is a Common Expression Language expression of type bool over
	// claims (map of the user's claims) and request (method, path, host).
	CEL string `yaml:"cel"`
	// Groups: the groups claim (a list of strings, or one string) holds
	// one of these.
	Groups []string `yaml:"groups"`
	// Roles: the roles claim, or Keycloak's realm_access.roles, holds one
	// of these.
	Roles []string `yaml:"roles"`
	// EmailDomains: the email claim ends in "@" + one of these (compared
	// without case), and email_verified is not false.
	EmailDomains []string `yaml:"email_domains"`
	// Emails: the email claim is one of these (without case), and
	// email_verified is not false.
	Emails []string `yaml:"emails"`
	// Claims maps a claim path (dotted for nested objects:
	// realm_access.roles) to accepted values: the claim, a string, a
	// number or a boolean, or a list holding one, equals one of them.
	Claims map[string][]string `yaml:"claims"`
}

// String describes r for a log line: its conditions, not the user's data.
func (r Rule) String() string {
	var parts []string
	list := func(k string, v []string) {
		if len(v) > 0 {
			parts = append(parts, k+": ["+strings.Join(v, ", ")+"]")
		}
	}
	list("groups", r.Groups)
	list("roles", r.Roles)
	list("email_domains", r.EmailDomains)
	list("emails", r.Emails)
	for _, k := range sortedKeys(r.Claims) {
		list("claims."+k, r.Claims[k])
	}
	if r.CEL != "" {
		parts = append(parts, "cel: "+r.CEL)
	}
	return strings.Join(parts, "; ")
}

// Input is what a decision reads.
type Input struct {
	// Claims are the user's claims; nil for an anonymous request.
	Claims map[string]any
	Method string
	// Path is the request path as matched (canonical form).
	Path string
	Host string
}

// Decision is the outcome of Decide.
type Decision struct {
	Allowed bool
	// Rule names the rule that decided: "deny[1]", "allow[0]", or "allow"
	// when no allow rule matched; "" when the policy has no rules.
	Rule string
	// Text is the rule's conditions (Rule.String).
	Text string
	// Err is the runtime error of a rule that could not be evaluated
	// (a missing claim, a claim of another type): such a deny rule
	// denies, such an allow rule does not allow.
	Err error
}

// Decider evaluates one compiled Policy. It is safe for concurrent use. A
// nil *Decider allows everything.
type Decider struct {
	allow, deny []*compiled
	source      Source
}

type compiled struct {
	Rule
	name    string
	prg     cel.Program // nil without CEL
	domains []string    // "@example.com", lower case
	emails  []string    // lower case
	claims  []claimCond
}

type claimCond struct {
	path   []string
	values []string
}

// costLimit bounds one CEL evaluation (runtime cost units, roughly one
// per operation and per list element visited): a rule looping over a
// hostile claim list stops instead of spinning.
const costLimit = 100_000

// env is the CEL environment every rule compiles in.
func env() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("claims", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("request", cel.MapType(cel.StringType, cel.StringType)),
		ext.Strings(),
	)
}

// Compile checks p and compiles its CEL expressions. Errors are
// *FieldError values joined, with paths such as "allow[0].cel", in the
// configuration's words.
func Compile(p Policy) (*Decider, error) {
	var errs []error
	switch p.ClaimsFrom {
	case SourceSession, SourceIDToken, SourceUserinfo, SourceAccessToken:
	default:
		errs = append(errs, &FieldError{Path: "claims_from", Msg: fmt.Sprintf("%q must be id_token, userinfo or access_token (or unset: the session's claims)", p.ClaimsFrom)})
	}
	if p.Empty() {
		if len(errs) > 0 {
			return nil, joinErrors(errs)
		}
		return nil, nil
	}
	e, err := env()
	if err != nil {
		return nil, fmt.Errorf("authz: CEL environment: %w", err)
	}
	d := &Decider{source: p.ClaimsFrom}
	for _, set := range []struct {
		name  string
		rules []Rule
		out   *[]*compiled
	}{{"allow", p.Allow, &d.allow}, {"deny", p.Deny, &d.deny}} {
		for i, r := range set.rules {
			c, ferrs := compileRule(e, fmt.Sprintf("%s[%d]", set.name, i), r)
			errs = append(errs, ferrs...)
			if c != nil {
				*set.out = append(*set.out, c)
			}
		}
	}
	if len(errs) > 0 {
		return nil, joinErrors(errs)
	}
	return d, nil
}

func compileRule(e *cel.Env, name string, r Rule) (*compiled, []error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Path: name + field, Msg: fmt.Sprintf(format, args...)})
	}
	c := &compiled{Rule: r, name: name}
	if r.CEL == "" && len(r.Groups) == 0 && len(r.Roles) == 0 && len(r.EmailDomains) == 0 && len(r.Emails) == 0 && len(r.Claims) == 0 {
		bad("", "sets no condition: give groups, roles, email_domains, emails, claims or cel")
	}
	for i, dom := range r.EmailDomains {
		dom = strings.TrimPrefix(strings.ToLower(strings.TrimSpace(dom)), "@")
		if dom == "" || strings.ContainsAny(dom, "@ ") {
			bad(fmt.Sprintf(".email_domains[%d]", i), "%q is not a domain (example.com)", r.EmailDomains[i])
			continue
		}
		c.domains = append(c.domains, "@"+dom)
	}
	for i, em := range r.Emails {
		if !strings.Contains(em, "@") {
			bad(fmt.Sprintf(".emails[%d]", i), "%q is not an email address", em)
			continue
		}
		c.emails = append(c.emails, strings.ToLower(strings.TrimSpace(em)))
	}
	for _, k := range sortedKeys(r.Claims) {
		path := strings.Split(k, ".")
		if slices.Contains(path, "") {
			bad(".claims."+k, "is not a claim path (names joined by dots: realm_access.roles)")
			continue
		}
		if len(r.Claims[k]) == 0 {
			bad(".claims."+k, "lists no value: give the accepted values")
			continue
		}
		c.claims = append(c.claims, claimCond{path: path, values: r.Claims[k]})
	}
	if r.CEL != "" {
		ast, iss := e.Compile(r.CEL)
		if iss.Err() != nil {
			bad(".cel", "%q does not compile: %v (variables: claims, request)", r.CEL, iss.Err())
		} else if t := ast.OutputType(); !t.IsExactType(types.BoolType) && !t.IsExactType(types.DynType) {
			bad(".cel", "%q is of type %s; a rule must be a bool", r.CEL, t)
		} else {
			prg, err := e.Program(ast, cel.CostLimit(costLimit), cel.EvalOptions(cel.OptOptimize))
			if err != nil {
				bad(".cel", "%q: %v", r.CEL, err)
			}
			c.prg = prg
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return c, nil
}

// Source returns where the policy reads claims.
func (d *Decider) Source() Source {
	if d == nil {
		return SourceSession
	}
	return d.source
}

// Decide evaluates the policy for in. Deny rules come first: a deny rule
// that matches, or that fails to evaluate, denies. Then, when there are
// allow rules, one must match; one that fails to evaluate does not.
func (d *Decider) Decide(in Input) Decision {
	if d == nil {
		return Decision{Allowed: true}
	}
	var act map[string]any
	vars := func() map[string]any {
		if act == nil {
			claims := in.Claims
			if claims == nil {
				claims = map[string]any{}
			}
			act = map[string]any{
				"claims":  claims,
				"request": map[string]string{"method": in.Method, "path": in.Path, "host": in.Host},
			}
		}
		return act
	}
	for _, r := range d.deny {
		ok, err := r.match(in.Claims, vars)
		if ok || err != nil {
			return Decision{Rule: r.name, Text: r.String(), Err: err}
		}
	}
	if len(d.allow) == 0 {
		return Decision{Allowed: true}
	}
	var firstErr error
	for _, r := range d.allow {
		ok, err := r.match(in.Claims, vars)
		if ok {
			return Decision{Allowed: true, Rule: r.name}
		}
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("%s: %w", r.name, err)
		}
	}
	return Decision{Rule: "allow", Text: "no allow rule matched", Err: firstErr}
}

func (r *compiled) match(claims map[string]any, vars func() map[string]any) (bool, error) {
	if len(r.Groups) > 0 && !anyIn(Strings(claims["groups"]), r.Groups) {
		return false, nil
	}
	if len(r.Roles) > 0 && !anyIn(Strings(claims["roles"]), r.Roles) && !anyIn(Strings(lookup(claims, []string{"realm_access", "roles"})), r.Roles) {
		return false, nil
	}
	if len(r.domains) > 0 || len(r.emails) > 0 {
		email, _ := claims["email"].(string)
		if email == "" || claims["email_verified"] == false {
			return false, nil
		}
		email = strings.ToLower(email)
		if len(r.emails) > 0 && !slices.Contains(r.emails, email) {
			return false, nil
		}
		if len(r.domains) > 0 && !slices.ContainsFunc(r.domains, func(d string) bool { return strings.HasSuffix(email, d) }) {
			return false, nil
		}
	}
	for _, cc := range r.claims {
		if !anyIn(scalars(lookup(claims, cc.path)), cc.values) {
			return false, nil
		}
	}
	if r.prg != nil {
		out, _, err := r.prg.Eval(vars())
		if err != nil {
			return false, err
		}
		b, ok := out.Value().(bool)
		if !ok {
			return false, fmt.Errorf("%w: the expression gave %s", ErrNotBool, out.Type().TypeName())
		}
		return b, nil
	}
	return true, nil
}

// lookup follows a claim path through nested objects; nil when a step is
// missing or not an object.
func lookup(claims map[string]any, path []string) any {
	var v any = claims
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// Strings reads a claim that should be a list of strings: a list (its
// string elements; others are ignored) or a single string (as some
// providers send a one-group claim). Anything else is no value. The
// gateway's identity headers read groups and roles with it too.
func Strings(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// scalars is strs for the claims shorthand: numbers and booleans compare
// by their JSON text.
func scalars(v any) []string {
	switch v := v.(type) {
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			if s, ok := scalar(e); ok {
				out = append(out, s)
			}
		}
		return out
	default:
		if s, ok := scalar(v); ok {
			return []string{s}
		}
	}
	return nil
}

func scalar(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case bool, float64, json.Number:
		b, _ := json.Marshal(v)
		return string(b), true
	}
	return "", false
}

func anyIn(have, want []string) bool {
	for _, h := range have {
		if slices.Contains(want, h) {
			return true
		}
	}
	return false
}

// Claims decodes a JSON object of claims (a session's). Empty input is no
// claims.
func Claims(raw []byte) (map[string]any, error) {
	if len(raw) == 0 {
		return map[string]any{}, nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrClaims, err)
	}
	if m == nil {
		m = map[string]any{}
	}
	return m, nil
}

// JWTClaims decodes the payload of a compact JWS (RFC 7515 §7.1) without
// checking its signature: for tokens the gateway received from the
// provider's token endpoint itself. An opaque token is ErrNotJWT.
func JWTClaims(token string) (map[string]any, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, ErrNotJWT
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: payload is not base64url: %v", ErrNotJWT, err)
	}
	return Claims(raw)
}

func sortedKeys(m map[string][]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
