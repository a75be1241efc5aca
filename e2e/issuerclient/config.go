package issuerclient

import (
	"encoding/json"
	"fmt"
	"net/url"
)

// The zero-config demo user, which bffgate's issuer creates when no user
// store is configured; Config uses it when Username is empty.
const (
	DemoUser     = "demo"
	DemoPassword = "demo"
)

// Config is the confidential client a test registers at the issuer, and
// the user it signs in as.
type Config struct {
	// ClientID and ClientSecret authenticate the client at the token,
	// revocation and introspection endpoints (client_secret_basic, RFC 6749
	// §2.3.1).
	ClientID     string
	ClientSecret string
	// RedirectURI is the client's registered redirect URI. Nothing needs to
	// listen there: the client reads the code from the redirect's Location.
	RedirectURI string
	// Username and Password are typed into the issuer's login form. Empty
	// means DemoUser and DemoPassword.
	Username string
	Password string
}

// withDefaults fills the demo user in and checks the client's fields,
// naming the one that is wrong.
func (c Config) withDefaults() (Config, error) {
	if c.Username == "" && c.Password == "" {
		c.Username, c.Password = DemoUser, DemoPassword
	}
	switch {
	case c.ClientID == "":
		return c, fmt.Errorf("issuerclient: Config.ClientID is empty: set the id the client is registered under")
	case c.ClientSecret == "":
		return c, fmt.Errorf("issuerclient: Config.ClientSecret is empty: the client is confidential (client_secret_basic)")
	case c.Username == "" || c.Password == "":
		return c, fmt.Errorf("issuerclient: Config.Username and Config.Password go together: set both, or neither for the demo user")
	}
	u, err := url.Parse(c.RedirectURI)
	if err != nil || !u.IsAbs() || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		// The grant recognises the client's redirect by this prefix
		// followed by "?", so the URI must be absolute and carry no query.
		return c, fmt.Errorf("issuerclient: Config.RedirectURI %q is not an absolute URL without query or fragment", c.RedirectURI)
	}
	return c, nil
}

// Env returns the BFFGATE_ISSUER_CLIENTS entry that registers the client
// with the authorization code and refresh token grants, for
// stack.Options.Env. The variable holds a YAML list; JSON is YAML.
func (c Config) Env() string {
	b, err := json.Marshal([]map[string]any{{
		"id":            c.ClientID,
		"secret":        c.ClientSecret,
		"redirect_uris": []string{c.RedirectURI},
		"grant_types":   []string{"authorization_code", "refresh_token"},
	}})
	if err != nil {
		// Strings and string slices always marshal.
		panic(err)
	}
	return "BFFGATE_ISSUER_CLIENTS=" + string(b)
}
