package issuer

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/bffgate/bffgate/internal/fuzzcorpus"
	"github.com/bffgate/bffgate/issuer/protocol"
)

// FuzzParseExchange reads a token request body as the token endpoint does
// for a token exchange (decodeParams, then parseExchange). Properties:
//   - no panic; a refusal is a protocol error, invalid_request or
//     invalid_target, whose description is within RFC 6749 §5.2's
//     characters;
//   - an accepted request has a subject token, a supported subject token
//     type, an actor token exactly when it has an actor token type (never
//     refresh_token), access_token or jwt as requested type, and at most
//     maxExchangeTargets targets, none empty, none twice.
func FuzzParseExchange(f *testing.F) {
	for _, s := range []struct{ name, body string }{
		{"impersonation", "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=eyJ.x.y&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token&audience=orders-api"},
		{"delegation", "subject_token=a&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&actor_token=b&actor_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token&resource=https%3A%2F%2Fo.example%2F&resource=https%3A%2F%2Fo.example%2F&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt"},
		{"actor-refresh", "subject_token=a&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Arefresh_token&actor_token=b&actor_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Arefresh_token"},
		{"empty-audience", "subject_token=a&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token&audience=&audience=x"},
		{"many-targets", "subject_token=a&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token&audience=1&audience=2&audience=3&audience=4&resource=5&resource=6&resource=7&resource=8&resource=9"},
		{"bad-type", "subject_token=a&subject_token_type=%22%5C%00%E2%80%9C"},
		{"nothing", ""},
	} {
		fuzzcorpus.Add(f, "adv-"+s.name, s.body)
	}
	f.Fuzz(func(t *testing.T, body string) {
		form, err := decodeParams(body, "request body")
		if err != nil {
			return
		}
		r, err := parseExchange(form)
		if err != nil {
			var pe *protocol.Error
			if !errors.As(err, &pe) || (pe.Code != "invalid_request" && pe.Code != "invalid_target") {
				t.Fatalf("parseExchange(%q): %v, want invalid_request or invalid_target", body, err)
			}
			if protocol.SafeDescription(pe.Description) != pe.Description {
				t.Fatalf("description %q outside RFC 6749 §5.2's characters", pe.Description)
			}
			return
		}
		switch {
		case r.subjectToken == "" || tokenTypes[r.subjectType] == nil:
			t.Fatalf("accepted without a subject token of a supported type: %+v", r)
		case (r.actorToken == "") != (r.actorType == ""), r.actorType == TokenTypeRefresh:
			t.Fatalf("accepted actor token %q of type %q", r.actorToken, r.actorType)
		case r.requestedType != TokenTypeAccess && r.requestedType != TokenTypeJWT:
			t.Fatalf("accepted requested_token_type %q", r.requestedType)
		case len(r.audiences)+len(r.resources) > maxExchangeTargets:
			t.Fatalf("accepted %d targets", len(r.audiences)+len(r.resources))
		}
		for _, list := range [][]string{r.audiences, r.resources} {
			for i, v := range list {
				if v == "" || slices.Index(list, v) != i {
					t.Fatalf("targets %q hold an empty or repeated value", list)
				}
			}
		}
	})
}

// FuzzActClaim builds the act claim of a delegation from a subject's act
// claim (any JSON). Properties: no panic; an accepted chain has the actor
// on top, the subject's act nested unchanged under it, and at most
// maxActDepth levels.
func FuzzActClaim(f *testing.F) {
	for _, s := range []struct{ name, act string }{
		{"none", ""},
		{"one", `{"sub":"client:a","client_id":"a"}`},
		{"nested", `{"sub":"b","act":{"sub":"a"}}`},
		{"deep", `{"act":{"act":{"act":{"act":{"act":{"act":{"act":{"act":{"act":{}}}}}}}}}}`},
		{"not-object", `{"sub":"b","act":"a"}`},
	} {
		fuzzcorpus.Add(f, "adv-"+s.name, s.act)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		subject := &party{Subject: "u"}
		if raw != "" {
			if json.Unmarshal([]byte(raw), &subject.Act) != nil {
				return
			}
		}
		act, err := actClaim(subject, &party{Subject: "client:x", ClientID: "x"})
		if err != nil {
			return
		}
		if act["sub"] != "client:x" || act["client_id"] != "x" {
			t.Fatalf("act %v does not name the actor", act)
		}
		depth := 0
		for a := act; a != nil; depth++ {
			next, ok := a["act"]
			if !ok {
				break
			}
			a, ok = next.(map[string]any)
			if !ok {
				t.Fatalf("accepted a chain with a non-object act: %v", act)
			}
		}
		if depth >= maxActDepth {
			t.Fatalf("accepted a chain %d deep", depth+1)
		}
	})
}
