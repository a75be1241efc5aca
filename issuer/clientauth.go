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
// client_secret_post, private_key_jwt (RFC 7523 §2.2), spiffe_jwt
// (draft-ietf-oauth-spiffe-client-auth), or none for a public client,
// exactly one method per request (RFC 6749 §2.3: "The client MUST NOT use
// more than one authentication method in each request"). form is the
// parsed body.
//
// Failures are invalid_client (401, the endpoint adds WWW-Authenticate),
// except a request mixing methods or naming two client ids, which is
// invalid_request.
func (s *Server) authenticateClient(c *fiber.Ctx, form url.Values, allowPublic bool) (*client, string, error) {
	cl, method, err := s.authenticateClientMethod(c, form, allowPublic)
	result := "ok"
	if err != nil {
		result = "refused"
		if method == "" {
			method = "unknown"
		}
	}
	s.ag.metrics.clientAuth.WithLabelValues(method, result).Inc()
	if err != nil {
		s.audit(c, AuditRecord{Action: "client_auth", ClientID: clip(form.Get("client_id"), 255), Decision: DecisionDeny, Reason: reasonOf(err), AuthMethod: method})
	}
	return cl, method, err
}

func (s *Server) authenticateClientMethod(c *fiber.Ctx, form url.Values, allowPublic bool) (*client, string, error) {
	basicID, basicSecret, err := parseBasicAuth(c.Get(fiber.HeaderAuthorization))
	hasBasic := err == nil
	if err != nil && !errors.Is(err, errNoBasic) {
		return nil, authBasic, protocol.ErrInvalidClient.WithDescription("%s", err.Error())
	}
	formID, formSecret := form.Get("client_id"), form.Get("client_secret")
	_, hasFormSecret := form["client_secret"]
	assertion, assertionType := form.Get("client_assertion"), form.Get("client_assertion_type")
	hasAssertion := assertion != "" || assertionType != ""

	var id, secret, method string
	switch {
	case hasAssertion && (hasBasic || hasFormSecret):
		return nil, "", protocol.ErrInvalidRequest.WithDescription("the client sent a client assertion and a client secret; use exactly one authentication method (RFC 6749 §2.3)")
	case hasBasic && hasFormSecret:
		return nil, "", protocol.ErrInvalidRequest.WithDescription("the client authenticated with both client_secret_basic and client_secret_post; use exactly one method (RFC 6749 §2.3)")
	case hasAssertion:
		return s.authenticateAssertion(c, form, formID, assertionType, assertion)
	case hasBasic:
		if formID != "" && formID != basicID {
			return nil, "", protocol.ErrInvalidRequest.WithDescription("the client_id parameter differs from the client_id of the Basic credentials")
		}
		id, secret, method = basicID, basicSecret, authBasic
	case hasFormSecret:
		if formID == "" {
			return nil, authPost, protocol.ErrInvalidClient.WithDescription("client_secret was sent without client_id")
		}
		id, secret, method = formID, formSecret, authPost
	case formID != "":
		id, method = formID, authNone
	default:
		return nil, "", protocol.ErrInvalidClient.WithDescription("no client authentication was included; send client_secret_basic, client_secret_post, a client assertion (private_key_jwt), or client_id for a public client")
	}

	cl := s.knownClient(c.UserContext(), id)
	if cl == nil {
		// Compare anyway so that an unknown id takes as long as a known
		// one with a wrong secret.
		subtle.ConstantTimeCompare(secretDigest(secret), s.dummySecret[:])
		return nil, method, protocol.ErrInvalidClient.WithDescription("the client is unknown or the client credentials are wrong")
	}
	switch cl.authMethod {
	case authNone:
		if method != authNone {
			return nil, method, protocol.ErrInvalidClient.WithDescription("client %q is a public client (no secret registered); send only client_id, no client secret", cl.ID)
		}
		if !allowPublic {
			return nil, method, protocol.ErrInvalidClient.WithDescription("client %q is a public client; this endpoint serves confidential clients only", cl.ID)
		}
		return cl, method, nil
	case authPrivateKeyJWT, authSPIFFEJWT:
		return nil, method, protocol.ErrInvalidClient.WithDescription("client %q authenticates with %s; send client_assertion_type %s and a client_assertion, no secret", cl.ID, cl.authMethod, assertionTypeOf(cl.authMethod))
	}
	if method == authNone {
		return nil, method, protocol.ErrInvalidClient.WithDescription("client %q is confidential; authenticate with client_secret_basic or client_secret_post", cl.ID)
	}
	if subtle.ConstantTimeCompare(secretDigest(secret), cl.secretDigest[:]) != 1 {
		return nil, method, protocol.ErrInvalidClient.WithDescription("the client is unknown or the client credentials are wrong")
	}
	return cl, method, nil
}

// assertionTypeOf is the client_assertion_type of an assertion method.
func assertionTypeOf(method string) string {
	if method == authSPIFFEJWT {
		return AssertionTypeSPIFFE
	}
	return AssertionTypeJWT
}

// authenticateAssertion authenticates a client by its client assertion
// (RFC 7521 §4.2): private_key_jwt or a JWT-SVID. Without client_id, the
// client is the assertion's sub (RFC 7523 §3 item 2), found before the
// assertion is verified and then verified against that client's keys.
func (s *Server) authenticateAssertion(c *fiber.Ctx, form url.Values, formID, typ, assertion string) (*client, string, error) {
	method := authPrivateKeyJWT
	switch typ {
	case AssertionTypeJWT:
	case AssertionTypeSPIFFE:
		method = authSPIFFEJWT
	case "":
		return nil, method, protocol.ErrInvalidRequest.WithDescription("client_assertion was sent without client_assertion_type (%s, or %s for a JWT-SVID)", AssertionTypeJWT, AssertionTypeSPIFFE)
	default:
		return nil, "", protocol.ErrInvalidClient.WithDescription("client_assertion_type %q is not supported (%s, or %s for a JWT-SVID)", clip(typ, 96), AssertionTypeJWT, AssertionTypeSPIFFE)
	}
	if assertion == "" {
		return nil, method, protocol.ErrInvalidRequest.WithDescription("client_assertion_type was sent without client_assertion")
	}
	if len(form["client_assertion"]) > 1 {
		return nil, method, protocol.ErrInvalidRequest.WithDescription("client_assertion was sent more than once")
	}
	id := formID
	if id == "" {
		claims, err := peekClaims(assertion)
		if err != nil || claims.Subject == "" {
			return nil, method, protocol.ErrInvalidClient.WithDescription("the request has no client_id and the client assertion names no sub")
		}
		id = claims.Subject
	}
	cl := s.client(id)
	if cl == nil {
		return nil, method, protocol.ErrInvalidClient.WithDescription("client %q is unknown", clip(id, 255))
	}
	if cl.authMethod != method {
		return nil, method, protocol.ErrInvalidClient.WithDescription("client %q does not authenticate with %s (it uses %s)", cl.ID, method, cl.authMethod)
	}
	endpoint := s.cfg.Issuer + strings.TrimPrefix(c.Path(), s.basePath)
	now := s.now()
	var err error
	if method == authSPIFFEJWT {
		err = s.verifySVIDAssertion(c.UserContext(), cl, assertion, endpoint, now)
	} else {
		err = s.verifyClientAssertion(c.UserContext(), cl, assertion, endpoint, now)
	}
	if err != nil {
		return nil, method, err
	}
	return cl, method, nil
}

// secretDigest hashes a client secret so that the constant-time comparison
// works on equal lengths and does not leak the secret's length.
func secretDigest(secret string) []byte {
	d := sha256.Sum256([]byte(secret))
	return d[:]
}
