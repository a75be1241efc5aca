// Package fuzzcorpus writes and reads seed files of Go's fuzzing corpus
// format ("go test fuzz v1", one Go literal per line), so that tests can
// keep real values made by the code itself (a sealed ticket, a minted
// token) in testdata/fuzz/FuzzX/ and check they stay real.
//
// Seeds are regenerated with the test flag -fuzzcorpus.update, e.g.
//
//	go test -run TestFuzzSeeds ./issuer/token -fuzzcorpus.update
//
// and committed; go test then runs every file of testdata/fuzz/FuzzX/ as a
// subtest of FuzzX, and `go test -fuzz` starts from them.
package fuzzcorpus

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// update is the -fuzzcorpus.update flag of every test binary that imports
// this package.
var update = flag.Bool("fuzzcorpus.update", false, "rewrite the generated seed files of testdata/fuzz")

// Update reports whether -fuzzcorpus.update was given.
func Update() bool { return *update }

// Encode returns the corpus file of one fuzz input. Values are of the
// types go test accepts as fuzz arguments that the targets here use:
// string, []byte, bool, int, int64, uint8, uint64.
func Encode(vals ...any) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range vals {
		switch v := v.(type) {
		case string:
			fmt.Fprintf(&b, "string(%s)\n", strconv.Quote(v))
		case []byte:
			fmt.Fprintf(&b, "[]byte(%s)\n", strconv.Quote(string(v)))
		case bool:
			fmt.Fprintf(&b, "bool(%t)\n", v)
		case int:
			fmt.Fprintf(&b, "int(%d)\n", v)
		case int64:
			fmt.Fprintf(&b, "int64(%d)\n", v)
		case uint8:
			fmt.Fprintf(&b, "byte(%q)\n", rune(v))
		case uint64:
			fmt.Fprintf(&b, "uint64(%d)\n", v)
		default:
			return nil, fmt.Errorf("fuzzcorpus: type %T is not supported", v)
		}
	}
	return b.Bytes(), nil
}

// Write writes the corpus file dir/name for vals (dir is
// testdata/fuzz/FuzzX), failing tb on error.
func Write(tb testing.TB, dir, name string, vals ...any) {
	tb.Helper()
	b, err := Encode(vals...)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		tb.Fatal(err)
	}
}

// Read returns the values of the corpus file path: string and []byte
// values as such, the integer kinds as int64 or uint64, bool as bool.
func Read(tb testing.TB, path string) []any {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	vals, err := Decode(b)
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return vals
}

// Decode parses a corpus file (see Read for the value types).
func Decode(b []byte) ([]any, error) {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) == 0 || lines[0] != "go test fuzz v1" {
		return nil, fmt.Errorf("fuzzcorpus: not a \"go test fuzz v1\" file")
	}
	var out []any
	for _, l := range lines[1:] {
		typ, lit, ok := strings.Cut(l, "(")
		if !ok || !strings.HasSuffix(lit, ")") {
			return nil, fmt.Errorf("fuzzcorpus: line %q is not T(literal)", l)
		}
		lit = lit[:len(lit)-1]
		switch typ {
		case "string", "[]byte":
			s, err := strconv.Unquote(lit)
			if err != nil {
				return nil, fmt.Errorf("fuzzcorpus: %s: %v", typ, err)
			}
			if typ == "string" {
				out = append(out, s)
			} else {
				out = append(out, []byte(s))
			}
		case "bool":
			v, err := strconv.ParseBool(lit)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		case "int", "int64", "int32", "int16", "int8", "rune":
			v, err := strconv.ParseInt(lit, 0, 64)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		case "uint", "uint64", "uint32", "uint16", "uint8", "byte":
			if strings.HasPrefix(lit, "'") {
				r, _, _, err := strconv.UnquoteChar(lit[1:len(lit)-1], '\'')
				if err != nil {
					return nil, err
				}
				out = append(out, uint64(r))
				continue
			}
			v, err := strconv.ParseUint(lit, 0, 64)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		default:
			return nil, fmt.Errorf("fuzzcorpus: type %s is not supported", typ)
		}
	}
	return out, nil
}

// Files returns the corpus files of dir whose names start with prefix.
func Files(tb testing.TB, dir, prefix string) []string {
	tb.Helper()
	m, err := filepath.Glob(filepath.Join(dir, prefix+"*"))
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// Add adds vals as a seed of f and, with -fuzzcorpus.update, writes them
// as testdata/fuzz/<f.Name()>/name, so that the seed written in the code
// is also in the corpus folder that `go test -fuzz` and other tools read.
func Add(f *testing.F, name string, vals ...any) {
	f.Helper()
	f.Add(vals...)
	if *update {
		Write(f, filepath.Join("testdata", "fuzz", f.Name()), name, vals...)
	}
}
