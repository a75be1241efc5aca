package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzConfig feeds arbitrary bytes to the configuration decoder and
// validation: they never panic, and every error names a key or the file
// (with its line where there is one), never nothing at all. Seeds are in
// testdata/fuzz/FuzzConfig and the example and error files.
func FuzzConfig(f *testing.F) {
	for _, glob := range []string{"../../bffgate.example.yaml", "testdata/config/*.yaml"} {
		files, _ := filepath.Glob(glob)
		for _, p := range files {
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	const file = "fuzz.yaml"
	f.Fuzz(func(t *testing.T, b []byte) {
		if b == nil {
			b = []byte{}
		}
		_, err := parseConfig(file, b, nil)
		if err == nil {
			return
		}
		if strings.Contains(err.Error(), " line 0") {
			t.Fatalf("an error points at line 0: %q", err)
		}
		for _, e := range flatten(err) {
			var ke *KeyError
			if errors.As(e, &ke) {
				if ke.Key == "" && ke.Where == "" {
					t.Fatalf("a KeyError with neither key nor place: %q", ke.Msg)
				}
				continue
			}
			if !strings.HasPrefix(e.Error(), file) {
				t.Fatalf("error names neither a key nor the file: %q", e)
			}
		}
	})
}
