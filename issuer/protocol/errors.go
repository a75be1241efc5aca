package protocol

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"
)

// Error is an OAuth 2.0 protocol error (RFC 6749 §4.1.2.1, §5.2; RFC 6750
// §3.1; RFC 7009 §2.2.1; OpenID Connect Core §3.1.2.6).
//
// Code and Description are what the client sees (the "error" and
// "error_description" members or redirect parameters); Status is the HTTP
// status of a token-endpoint or resource response. The cause is kept for
// logs and errors.Is/As and never reaches a client: it may name stored
// records or key ids that a client has no business seeing.
//
// The package-level values (ErrInvalidRequest, ...) are sentinels: they are
// never mutated. WithDescription, WithCause and WithStatus return copies, so
// a handler can write
//
//	return protocol.ErrInvalidGrant.WithDescription("the code has expired; start a new authorization").WithCause(err)
//
// and errors.Is(err, protocol.ErrInvalidGrant) still holds, because Is
// compares Code.
type Error struct {
	// Code is the RFC 6749 error code, e.g. "invalid_grant".
	Code string
	// Description is the error_description: what exactly was wrong and
	// what the client should do. It must never contain a secret. The
	// sentinels and WithDescription keep it within the characters RFC 6749
	// §5.2 allows (see SafeDescription); set it through WithDescription.
	Description string
	// Status is the HTTP status for a direct (non-redirect) response.
	Status int

	cause error
}

// The error codes of RFC 6749 §4.1.2.1 and §5.2, OpenID Connect Core
// §3.1.2.6, RFC 6750 §3.1 and RFC 7009 §2.2.1, each with the HTTP status a
// direct response carries. RFC 6749 §5.2 prescribes 400 for every token
// endpoint error except invalid_client, which is 401 when the client tried
// HTTP authentication (the endpoint adds WWW-Authenticate).
var (
	// ErrInvalidRequest: a parameter is missing, repeated, malformed or
	// not supported (RFC 6749 §5.2).
	ErrInvalidRequest = newSentinel("invalid_request", "The request is missing a required parameter, includes an invalid parameter value, includes a parameter more than once, or is otherwise malformed.", http.StatusBadRequest)
	// ErrInvalidClient: client authentication failed (RFC 6749 §5.2).
	ErrInvalidClient = newSentinel("invalid_client", "Client authentication failed: the client is unknown, no client authentication was included, or the authentication method is not supported.", http.StatusUnauthorized)
	// ErrInvalidGrant: the code, refresh token or PKCE verifier is
	// invalid, expired, revoked, or was issued to another client or
	// redirect URI (RFC 6749 §5.2).
	ErrInvalidGrant = newSentinel("invalid_grant", "The provided authorization grant or refresh token is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.", http.StatusBadRequest)
	// ErrUnauthorizedClient: this client may not use this grant type or
	// response type (RFC 6749 §4.1.2.1, §5.2).
	ErrUnauthorizedClient = newSentinel("unauthorized_client", "The authenticated client is not authorized to use this authorization grant type.", http.StatusBadRequest)
	// ErrUnsupportedGrantType (RFC 6749 §5.2).
	ErrUnsupportedGrantType = newSentinel("unsupported_grant_type", "The authorization grant type is not supported by the authorization server.", http.StatusBadRequest)
	// ErrInvalidScope: the scope is unknown, malformed or exceeds what was
	// granted (RFC 6749 §3.3, §5.2).
	ErrInvalidScope = newSentinel("invalid_scope", "The requested scope is invalid, unknown, malformed, or exceeds the scope granted by the resource owner.", http.StatusBadRequest)
	// ErrAccessDenied: the resource owner or the server denied the request
	// (RFC 6749 §4.1.2.1).
	ErrAccessDenied = newSentinel("access_denied", "The resource owner or authorization server denied the request.", http.StatusForbidden)
	// ErrUnsupportedResponseType (RFC 6749 §4.1.2.1).
	ErrUnsupportedResponseType = newSentinel("unsupported_response_type", "The authorization server does not support obtaining an authorization code using this method.", http.StatusBadRequest)
	// ErrServerError: an unexpected condition; the cause goes to the log
	// only (RFC 6749 §4.1.2.1).
	ErrServerError = newSentinel("server_error", "The authorization server encountered an unexpected condition that prevented it from fulfilling the request.", http.StatusInternalServerError)
	// ErrTemporarilyUnavailable: overload or maintenance, e.g. the store
	// is unreachable (RFC 6749 §4.1.2.1).
	ErrTemporarilyUnavailable = newSentinel("temporarily_unavailable", "The authorization server is currently unable to handle the request due to a temporary overloading or maintenance; retry later.", http.StatusServiceUnavailable)
	// ErrLoginRequired: prompt=none but the user is not logged in (OpenID
	// Connect Core §3.1.2.6).
	ErrLoginRequired = newSentinel("login_required", "The authorization server requires end-user authentication, which prompt=none does not allow.", http.StatusBadRequest)
	// ErrConsentRequired: prompt=none but consent is needed (OpenID
	// Connect Core §3.1.2.6).
	ErrConsentRequired = newSentinel("consent_required", "The authorization server requires end-user consent, which prompt=none does not allow.", http.StatusBadRequest)
	// ErrInteractionRequired: prompt=none but some user interaction is
	// needed (OpenID Connect Core §3.1.2.6).
	ErrInteractionRequired = newSentinel("interaction_required", "The authorization server requires end-user interaction of some form, which prompt=none does not allow.", http.StatusBadRequest)
	// ErrInvalidToken: the bearer token is expired, revoked, malformed or
	// otherwise invalid (RFC 6750 §3.1).
	ErrInvalidToken = newSentinel("invalid_token", "The access token provided is expired, revoked, malformed, or invalid for other reasons.", http.StatusUnauthorized)
	// ErrInsufficientScope: the token lacks the scope the resource needs
	// (RFC 6750 §3.1).
	ErrInsufficientScope = newSentinel("insufficient_scope", "The request requires higher privileges than provided by the access token.", http.StatusForbidden)
	// ErrUnsupportedTokenType: revocation of this token type is not
	// supported (RFC 7009 §2.2.1).
	ErrUnsupportedTokenType = newSentinel("unsupported_token_type", "The authorization server does not support the revocation of the presented token type.", http.StatusBadRequest)
)

func newSentinel(code, description string, status int) *Error {
	return &Error{Code: code, Description: SafeDescription(description), Status: status}
}

// SafeDescription returns s within the character set RFC 6749 §5.2 allows
// in error_description: %x20-21 / %x23-5B / %x5D-7E, printable ASCII
// without '"' and '\'. The value also goes into a redirect's query, an
// RFC 6750 §3 quoted-string in WWW-Authenticate, and client logs, all of
// which a quote, a backslash or a control character could break.
//
// It keeps the text readable rather than refusing it: '§' becomes
// "section" (descriptions cite "RFC 6749 section 3.2"), '"' and the
// typographic quotes become "'", dashes '-', the ellipsis "...", tabs, line
// breaks and no-break spaces a space; every other character outside the
// set (a backslash, a control character, any other non-ASCII, invalid
// UTF-8) becomes '?', so that a client sees where its input held one. It is
// idempotent. Every Description made by WithDescription has been through
// it, and the issuer's response writers apply it once more to whatever they
// send.
func SafeDescription(s string) string {
	if descriptionSafe(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i, r := range s {
		switch r {
		case '§':
			// "§3.2" and "§ 3.2" both read "section 3.2".
			b.WriteString("section")
			if rest := s[i+utf8.RuneLen(r):]; rest != "" && rest[0] != ' ' {
				b.WriteByte(' ')
			}
		case '"', '\u2018', '\u2019', '\u201c', '\u201d', '\u00ab', '\u00bb':
			b.WriteByte('\'')
		case '\u2010', '\u2011', '\u2012', '\u2013', '\u2014', '\u2212':
			b.WriteByte('-')
		case '\u2026':
			b.WriteString("...")
		case '\t', '\n', '\r', '\u00a0', '\u2028', '\u2029':
			b.WriteByte(' ')
		default:
			if r >= 0x20 && r <= 0x7e && r != '\\' {
				b.WriteRune(r)
			} else {
				b.WriteByte('?')
			}
		}
	}
	return b.String()
}

// descriptionSafe reports whether s is already within RFC 6749 §5.2's
// error_description characters.
func descriptionSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// Error returns "code: description", followed by the cause when there is
// one. It is for logs; a response uses Code and Description only.
func (e *Error) Error() string {
	if e == nil {
		return "<nil>"
	}
	msg := e.Code
	if e.Description != "" {
		msg += ": " + e.Description
	}
	if e.cause != nil {
		msg += ": " + e.cause.Error()
	}
	return msg
}

// Is reports whether target is an *Error with the same Code, so that
// errors.Is(err, ErrInvalidGrant) holds for every copy made from the
// sentinel, whatever its description, status or cause.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok || e == nil || t == nil {
		return false
	}
	return e.Code == t.Code
}

// Unwrap returns the cause, so errors.Is/As see through the protocol error
// to e.g. storage.ErrNotFound.
func (e *Error) Unwrap() error { return e.cause }

// Cause returns the underlying error (nil when none), for logging.
func (e *Error) Cause() error { return e.cause }

// WithDescription returns a copy of e whose Description is the formatted
// text passed through SafeDescription, so that no format, and no client
// input quoted with %q, takes a description outside RFC 6749 §5.2's
// characters. Write what was wrong and what to do ("the redirect_uri is
// not registered for this client; register it or use a registered one"),
// never a secret value.
func (e *Error) WithDescription(format string, args ...any) *Error {
	c := *e
	if len(args) == 0 {
		c.Description = SafeDescription(format)
	} else {
		c.Description = SafeDescription(fmt.Sprintf(format, args...))
	}
	return &c
}

// WithCause returns a copy of e carrying err as its cause (for logs and
// errors.Is; never shown to the client).
func (e *Error) WithCause(err error) *Error {
	c := *e
	c.cause = err
	return &c
}

// WithStatus returns a copy of e with another HTTP status, e.g. 401 for
// invalid_token at a resource, or 400 for invalid_client when the client did
// not use HTTP authentication.
func (e *Error) WithStatus(status int) *Error {
	c := *e
	c.Status = status
	return &c
}

// AsError returns the *Error in err's chain, or ErrServerError wrapping err
// when there is none (an unexpected error is a 500 whose cause is logged,
// never shown). AsError(nil) returns nil.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var pe *Error
	if errors.As(err, &pe) && pe != nil {
		return pe
	}
	return ErrServerError.WithCause(err)
}
