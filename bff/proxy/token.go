package proxy

import "context"

// TokenSource supplies the access token of one forwarded request, and a
// new one when the upstream refuses it, as golang.org/x/oauth2 composes
// TokenSources. Package bff implements it over the session (refreshing
// through package tokens) and over the gateway's client-credentials
// token; ForwardWith calls it, so that the retry after an upstream's 401
// happens inside the proxy, before anything of the upstream's answer is
// written, and no caller patches a half-written response.
type TokenSource interface {
	// Token returns the access token to send ("" sends none). An error
	// ends ForwardWith before anything is sent upstream or written; the
	// caller answers with its own error.
	Token(ctx context.Context) (string, error)
	// Renew is called at most once per request, when the upstream
	// answered 401 with a Bearer invalid_token challenge (RFC 6750 §3.1)
	// to the token refused and the request can be replayed. It returns
	// the token to replay the request with. "" or refused itself means
	// there is none better: the upstream's 401 then reaches the browser.
	// An error discards the upstream's answer entirely (its status,
	// headers and body) and ends ForwardWith with nothing written, for
	// the caller to answer with its own error (such as 401
	// session_expired when the refresh was refused).
	Renew(ctx context.Context, refused string) (string, error)
}

// Bearer is a TokenSource of one fixed access token that is never
// renewed ("" sends none): an upstream's 401 passes through.
type Bearer string

// Token implements TokenSource.
func (b Bearer) Token(context.Context) (string, error) { return string(b), nil }

// Renew implements TokenSource: there is no other token.
func (b Bearer) Renew(context.Context, string) (string, error) { return "", nil }

// IdentitySource is implemented by a TokenSource that also says who the
// user is to the upstream: plain identity headers, a signed assertion.
// ForwardWith asks it once Token (or Renew) has returned, and sets the
// headers it gives after the browser's headers are filtered, so that no
// client can supply them (the caller lists their names in the route's
// DropHeaders, or they are among the identity headers the proxy drops
// from everyone). Values must be valid header values; names must not be
// the ones the proxy manages (Host, Authorization, Cookie, the
// X-Forwarded chain).
type IdentitySource interface {
	IdentityHeaders() []Header
}

// Header is one request header an IdentitySource sets.
type Header struct{ Name, Value string }
