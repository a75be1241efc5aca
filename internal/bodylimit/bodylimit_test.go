package bodylimit

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestClient(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := 100
		if r.URL.Path == "/big" {
			n = 101
		}
		io.WriteString(w, strings.Repeat("x", n))
	}))
	defer srv.Close()
	orig := &http.Client{}
	c := Client(orig, 100)
	if orig.Transport != nil {
		t.Fatal("the caller's client was changed")
	}
	for _, tc := range []struct {
		path    string
		wantErr bool
	}{{"/exact", false}, {"/big", true}} {
		resp, err := c.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if tc.wantErr {
			if err == nil || !strings.Contains(err.Error(), "larger than 100 bytes") {
				t.Errorf("%s: read %d bytes, err %v: want the limit's error", tc.path, len(b), err)
			}
		} else if err != nil || len(b) != 100 {
			t.Errorf("%s: read %d bytes, err %v: want all 100", tc.path, len(b), err)
		}
	}
}
