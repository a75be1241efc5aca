package forwardauth

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// TestREADMERecipes: the README's forward-auth recipes are, byte for
// byte, the files these tests run.
func TestREADMERecipes(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ marker, file string }{
		{"forward-auth-config", "bffgate.yaml"},
		{"forward-auth-nginx", "nginx.conf"},
		{"forward-auth-caddy", "Caddyfile"},
	} {
		m := regexp.MustCompile("(?s)<!-- " + tc.marker + ": e2e/forwardauth/testdata/" + regexp.QuoteMeta(tc.file) + "[^>]*-->\n```[a-z]*\n(.*?)```").FindSubmatch(readme)
		if m == nil {
			t.Errorf("README.md has no %s block naming e2e/forwardauth/testdata/%s", tc.marker, tc.file)
			continue
		}
		if want := recipe(t, tc.file); string(m[1]) != want {
			t.Errorf("README.md's %s block differs from testdata/%s: update one from the other", tc.marker, tc.file)
		}
	}
}
