package issuer

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/url"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/issuer/protocol"
)

// Client authentication methods (RFC 7591 §2, token_endpoint_auth_method).
const (
	authBasic = "client_secret_basic"
	authPost  = "client_secret_post"
	authNone  = "none"
)

var errNoBasic = errors.New("no Basic credentials")

// parseBasicAuth decodes an Authorization header of the Basic scheme
// (RFC 7617 §2) carrying OAuth client credentials, which RFC 6749 §2.3.1
// form-urlencodes before base64 ("client_id:client_secret" with both parts
// application/x-www-form-urlencoded). The scheme name is case-insensitive.
// It returns errNoBasic when the header is absent or of another scheme.
func parseBasicAuth(header string) (id, secret string, err error) {
	if header == "" {
		return "", "", errNoBasic
	}
	scheme, rest, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return "", "", errNoBasic
	}
	rest = strings.TrimLeft(rest, " ")
	if len(rest) > 4096 {
		return "", "", errors.New("the Basic credentials are too long")
	}
	raw, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return "", "", errors.New("the Basic credentials are not valid base64")
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	if !ok {
		return "", "", errors.New("the Basic credentials lack the ':' between client_id and client_secret")
	}
	if id, err = url.QueryUnescape(user); err != nil {
		return "", "", errors.New("the client_id in the Basic credentials is not form-urlencoded (RFC 6749 §2.3.1)")
	}
	if secret, err = url.QueryUnescape(pass); err != nil {
		return "", "", errors.New("the client_secret in the Basic credentials is not form-urlencoded (RFC 6749 §2.3.1)")
	}
	if id == "" {
		return "", "", errors.New("the client_id in the Basic credentials is empty")
	}
	return id, secret, nil
}

// authenticateClient authenticates the client of a token, revocation or
// introspection request (RFC 6749 §2.3.1, §3.2.1): client_secret_basic,
// client_secret_post, or none for a public client, exactly one method per
// request (RFC 6749 §2.3: "The client MUST NOT use more than one
// authentication method in each request"). form is the parsed body.
//
// Failures are invalid_client (401, the endpoint adds WWW-Authenticate),
// except a request mixing methods or naming two client ids, which is
// invalid_request.
func (s *Server) authenticateClient(c *fiber.Ctx, form url.Values, allowPublic bool) (*client, string, error) {
	basicID, basicSecret, err := parseBasicAuth(c.Get(fiber.HeaderAuthorization))
	hasBasic := err == nil
	if err != nil && !errors.Is(err, errNoBasic) {
		return nil, "", protocol.ErrInvalidClient.WithDescription("%s", err.Error())
	}
	formID, formSecret := form.Get("client_id"), form.Get("client_secret")
	_, hasFormSecret := form["client_secret"]

	var id, secret, method string
	switch {
	case hasBasic && hasFormSecret:
		return nil, "", protocol.ErrInvalidRequest.WithDescription("the client authenticated with both client_secret_basic and client_secret_post; use exactly one method (RFC 6749 §2.3)")
	case hasBasic:
		if formID != "" && formID != basicID {
			return nil, "", protocol.ErrInvalidRequest.WithDescription("the client_id parameter differs from the client_id of the Basic credentials")
		}
		id, secret, method = basicID, basicSecret, authBasic
	case hasFormSecret:
		if formID == "" {
			return nil, "", protocol.ErrInvalidClient.WithDescription("client_secret was sent without client_id")
		}
		id, secret, method = formID, formSecret, authPost
	case formID != "":
		id, method = formID, authNone
	default:
		return nil, "", protocol.ErrInvalidClient.WithDescription("no client authentication was included; send client_secret_basic, client_secret_post, or client_id for a public client")
	}

	cl := s.clients[id]
	if cl == nil {
		// Compare anyway so that an unknown id takes as long as a known
		// one with a wrong secret.
		subtle.ConstantTimeCompare(secretDigest(secret), s.dummySecret[:])
		return nil, "", protocol.ErrInvalidClient.WithDescription("the client is unknown or the client credentials are wrong")
	}
	if cl.public() {
		if method != authNone {
			return nil, "", protocol.ErrInvalidClient.WithDescription("client %q is a public client (no secret registered); send only client_id, no client secret", cl.ID)
		}
		if !allowPublic {
			return nil, "", protocol.ErrInvalidClient.WithDescription("client %q is a public client; this endpoint serves confidential clients only", cl.ID)
		}
		return cl, method, nil
	}
	if method == authNone {
		return nil, "", protocol.ErrInvalidClient.WithDescription("client %q is confidential; authenticate with client_secret_basic or client_secret_post", cl.ID)
	}
	if subtle.ConstantTimeCompare(secretDigest(secret), cl.secretDigest[:]) != 1 {
		return nil, "", protocol.ErrInvalidClient.WithDescription("the client is unknown or the client credentials are wrong")
	}
	return cl, method, nil
}

// secretDigest hashes a client secret so that the constant-time comparison
// works on equal lengths and does not leak the secret's length.
func secretDigest(secret string) []byte {
	d := sha256.Sum256([]byte(secret))
	return d[:]
}
