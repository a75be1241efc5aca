package token

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// reserved are the claim names the Codec writes itself; Extra may not use
// them (an Extra "iss" or "exp" would otherwise override a checked claim
// in some readers).
var reserved = map[string]bool{
	"iss": true, "sub": true, "aud": true, "exp": true, "nbf": true, "iat": true,
	"jti": true, "client_id": true, "scope": true, "auth_time": true, "sid": true,
	"grant_id": true, "nonce": true, "at_hash": true, "azp": true, "gty": true,
}

// IsReserved reports whether name is a claim the Codec writes itself and
// Claims.Extra may not hold.
func IsReserved(name string) bool { return reserved[name] }

// wire is the JSON payload; omitempty drops what a kind does not carry.
type wire struct {
	Iss      string   `json:"iss"`
	Sub      string   `json:"sub"`
	Aud      audience `json:"aud,omitempty"`
	Exp      int64    `json:"exp"`
	Iat      int64    `json:"iat"`
	Nbf      int64    `json:"nbf,omitempty"`
	JTI      string   `json:"jti,omitempty"`
	ClientID string   `json:"client_id,omitempty"`
	Scope    string   `json:"scope,omitempty"`
	AuthTime int64    `json:"auth_time,omitempty"`
	SID      string   `json:"sid,omitempty"`
	GrantID  string   `json:"grant_id,omitempty"`
	Nonce    string   `json:"nonce,omitempty"`
	AtHash   string   `json:"at_hash,omitempty"`
	Azp      string   `json:"azp,omitempty"`
	Gty      string   `json:"gty,omitempty"`
}

// audience marshals one value as a string, several as an array (RFC 7519
// §4.1.3 allows both; a single string is what most readers expect).
type audience []string

func (a audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	return json.Marshal([]string(a))
}

func unix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// encodeClaims returns the JSON payload of cl for kind.
func encodeClaims(kind Kind, cl *Claims) ([]byte, error) {
	w := wire{
		Iss: cl.Issuer, Sub: cl.Subject, Aud: audience(cl.Audience),
		Exp: unix(cl.Expiry), Iat: unix(cl.IssuedAt), AuthTime: unix(cl.AuthTime),
		SID: cl.SID, JTI: cl.JTI,
	}
	switch kind {
	case Access, Refresh:
		w.Nbf = unix(cl.NotBefore)
		w.ClientID = cl.ClientID
		w.Scope = cl.Scope
		w.GrantID = cl.GrantID
		w.Gty = cl.GrantType
	case ID:
		w.Nonce = cl.Nonce
		w.AtHash = cl.AccessTokenHash
		w.Azp = cl.ClientID
	}
	b, err := json.Marshal(&w)
	if err != nil {
		return nil, fmt.Errorf("token: encode claims: %w", err)
	}
	if len(cl.Extra) == 0 {
		return b, nil
	}
	for k := range cl.Extra {
		if reserved[k] {
			return nil, fmt.Errorf("%w: Extra holds %q, a claim the codec writes itself; use the Claims field", ErrInvalidClaims, k)
		}
		if k == "" {
			return nil, fmt.Errorf("%w: Extra holds an empty claim name", ErrInvalidClaims)
		}
	}
	extra, err := json.Marshal(cl.Extra)
	if err != nil {
		return nil, fmt.Errorf("%w: Extra: %v", ErrInvalidClaims, err)
	}
	// Splice: {...w...} + {...extra...} -> {...w...,...extra...}
	out := make([]byte, 0, len(b)+len(extra))
	out = append(out, b[:len(b)-1]...)
	out = append(out, ',')
	out = append(out, extra[1:]...)
	return out, nil
}

// decodeClaims parses a payload strictly: a JSON object, registered claims
// of the right JSON type, numeric dates finite and in range.
func decodeClaims(payload []byte) (*Claims, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(payload, &raw); err != nil {
		return nil, fmt.Errorf("%w: claims are not a JSON object: %v", ErrMalformed, err)
	}
	if raw == nil {
		return nil, fmt.Errorf("%w: claims are null", ErrMalformed)
	}
	cl := &Claims{}
	var err error
	for name, v := range raw {
		switch name {
		case "iss":
			err = str(v, &cl.Issuer)
		case "sub":
			err = str(v, &cl.Subject)
		case "aud":
			cl.Audience, err = aud(v)
		case "exp":
			cl.Expiry, err = numericDate(v)
		case "iat":
			cl.IssuedAt, err = numericDate(v)
		case "nbf":
			cl.NotBefore, err = numericDate(v)
		case "auth_time":
			cl.AuthTime, err = numericDate(v)
		case "jti":
			err = str(v, &cl.JTI)
		case "client_id":
			err = str(v, &cl.ClientID)
		case "azp":
			var azp string
			if err = str(v, &azp); err == nil && cl.ClientID == "" {
				cl.ClientID = azp
			}
		case "scope":
			err = str(v, &cl.Scope)
		case "sid":
			err = str(v, &cl.SID)
		case "grant_id":
			err = str(v, &cl.GrantID)
		case "gty":
			err = str(v, &cl.GrantType)
		case "nonce":
			err = str(v, &cl.Nonce)
		case "at_hash":
			err = str(v, &cl.AccessTokenHash)
		default:
			var x any
			if err = json.Unmarshal(v, &x); err == nil {
				if cl.Extra == nil {
					cl.Extra = map[string]any{}
				}
				cl.Extra[name] = x
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%w: claim %q: %v", ErrMalformed, name, err)
		}
	}
	return cl, nil
}

func str(v json.RawMessage, dst *string) error {
	if len(v) == 0 || v[0] != '"' {
		return fmt.Errorf("not a string")
	}
	return json.Unmarshal(v, dst)
}

func aud(v json.RawMessage) ([]string, error) {
	if len(v) > 0 && v[0] == '"' {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, err
		}
		return []string{s}, nil
	}
	if len(v) == 0 || v[0] != '[' {
		return nil, fmt.Errorf("not a string or an array of strings")
	}
	var a []string
	if err := json.Unmarshal(v, &a); err != nil {
		return nil, fmt.Errorf("not a string or an array of strings")
	}
	return a, nil
}

// maxDate bounds numeric dates to what time.Unix represents sanely (year
// 9999), so a huge exp cannot overflow into the past.
const maxDate = 253402300799

// numericDate reads an RFC 7519 §2 NumericDate (seconds, maybe
// fractional; the fraction is dropped).
func numericDate(v json.RawMessage) (time.Time, error) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || !(v[0] == '-' || (v[0] >= '0' && v[0] <= '9')) {
		return time.Time{}, fmt.Errorf("not a number")
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return time.Time{}, fmt.Errorf("not a number")
	}
	if f < 0 || f > maxDate {
		return time.Time{}, fmt.Errorf("out of range")
	}
	return time.Unix(int64(f), 0).UTC(), nil
}
