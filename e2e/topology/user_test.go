package topology

import "encoding/json"

// The user the gateway tests sign in as (configured with its argon2id
// hash in the issuer's users list). Not issuerclient.DemoUser: the demo
// user exists only in the zero-config run, and these tests give bffgate a
// configuration file, whose redis section is what they test.
const (
	userName     = "topology"
	userPassword = "topology-password-0123456789"
	userSubject  = "topology-user-1"
)

// clip shortens s for a failure message.
func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// whoamiSubject returns the subject of the demo API's /api/whoami
// answer ("" when there is none).
func whoamiSubject(body string) string {
	var v struct {
		Subject string `json:"subject"`
	}
	_ = json.Unmarshal([]byte(body), &v)
	return v.Subject
}

// userSub returns the sub claim of the gateway's /bff/user answer, a
// list of {type, value} claims ("" when there is none).
func userSub(body string) string {
	var claims []struct {
		Type  string `json:"type"`
		Value any    `json:"value"`
	}
	_ = json.Unmarshal([]byte(body), &claims)
	for _, c := range claims {
		if s, ok := c.Value.(string); ok && c.Type == "sub" {
			return s
		}
	}
	return ""
}
