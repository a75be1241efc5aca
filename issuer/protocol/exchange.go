package protocol

import "net/http"

// ErrInvalidTarget: a token exchange or a token request asked for an
// audience or resource the authorization server will not issue a token
// for (RFC 8693 §2.2.2, RFC 8707 §2).
var ErrInvalidTarget = newSentinel("invalid_target", "The requested audience or resource is invalid, unknown, or not one the client may obtain a token for.", http.StatusBadRequest)
