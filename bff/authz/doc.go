// Package authz decides whether a signed-in user may make a request: the
// allow and deny rules of a gateway route, over the user's claims and the
// request's method, path and host.
//
// Rules are plain shorthands for the common cases (groups, roles,
// email_domains, emails, claims), as oauth2-proxy's --allowed-group and
// --email-domain and Pomerium's policy criteria offer, and Common
// Expression Language expressions (cel.dev/cel-go, the language of
// Kubernetes' ValidatingAdmissionPolicy and Envoy's RBAC filter) for the
// rest. Everything compiles when the gateway starts: a rule that does not
// parse, names an unknown variable or is not a bool stops the start.
//
// # Security
//
// A decision fails closed. A deny rule that cannot be evaluated (a claim
// it reads is missing, or of another type) denies; an allow rule that
// cannot be evaluated does not allow. A claim of an unexpected type never
// panics: the shorthands read a list of strings or a single string and
// ignore anything else, and CEL reports a type mismatch as an error.
// CEL evaluation is bounded by a cost limit, so a rule iterating a
// hostile claim list stops. Email shorthands need email_verified not to
// be false (OpenID Connect Core §5.1), as oauth2-proxy does.
package authz
