package edge

import (
	"strings"
	"testing"
)

// TestCheckFraming decides raw header sections directly, in the cases
// of names that only differ in case (RFC 9110 §5.1: field names are
// case-insensitive) and lines checkFraming passes over.
func TestCheckFraming(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  string
		bad  bool
	}{
		{"plain", "Host: a\r\nAccept: */*\r\nCookie: x=1\r\n\r\n", false},
		{"cl", "Host: a\r\nContent-Length: 3\r\n\r\n", false},
		{"te", "Host: a\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"te_lower", "host: a\r\ntransfer-encoding: gzip\r\n\r\n", true},
		{"te_upper_and_cl_lower", "TRANSFER-ENCODING: chunked\r\ncontent-length: 3\r\n\r\n", true},
		{"te_twice_mixed_case", "transfer-encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"te_space_before_colon", "Transfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\n", true},
		// bytes.EqualFold folds U+017F (long s) to s: decided as before.
		{"te_long_s", "Tran\u017ffer-Encoding: gzip\r\n\r\n", true},
		{"obs_fold", "X-A: 1\r\n  2\r\n\r\n", true},
		{"te_like_names", "TE: trailers\r\nTrailer: x\r\nCache-Control: no-cache\r\nConnection: keep-alive\r\n\r\n", false},
		{"cl_then_te_after_others", "Accept: */*\r\nContent-Length: 3\r\nX-B: 2\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"lf_only", "Host: a\nTransfer-Encoding: chunked\nContent-Length: 3\n\n", true},
		// A field name is a token: no space, no control or non-ASCII byte.
		{"space_in_name", "Host: a\r\nContent Length: 3\r\n\r\n", true},
		{"space_in_other_name", "Host: a\r\nX-Weird Name: v\r\n\r\n", true},
		{"non_ascii_name", "Host: a\r\nX-\xc3\x9c: v\r\n\r\n", true},
		{"token_punctuation", "Host: a\r\nX-A!#$%&'*+.^_`|~1: v\r\n\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := checkFraming([]byte(tc.raw)); (err != nil) != tc.bad {
				t.Errorf("checkFraming(%q) = %v, want refused %v", strings.ReplaceAll(tc.raw, "\r\n", "|"), err, tc.bad)
			}
		})
	}
}
