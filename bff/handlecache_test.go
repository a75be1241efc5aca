package bff

import (
	"strings"
	"testing"
	"unsafe"
)

// TestHandleCache: a handle joined again from equal cookies is the same
// string (no copy); any difference in any part, a part more or less, or
// another cookie in the same slot gives the right bytes.
func TestHandleCache(t *testing.T) {
	t.Parallel()
	hc := new(handleCache)
	parts := func(ps ...string) ([][]byte, int) {
		out := make([][]byte, maxChunks)
		n := 0
		for i, p := range ps {
			out[i] = []byte(p)
			n += len(p)
		}
		return out, n
	}
	a1, n := parts(strings.Repeat("a", 3800), "tail-of-the-session")
	first := hc.join(a1, n)
	a2, _ := parts(strings.Repeat("a", 3800), "tail-of-the-session")
	again := hc.join(a2, n)
	if again != first || unsafe.StringData(again) != unsafe.StringData(first) {
		t.Errorf("equal cookies: a new string, want the cached one")
	}
	for _, tc := range [][]string{
		{strings.Repeat("a", 3799) + "b", "tail-of-the-session"}, // same slot, a byte differs
		{strings.Repeat("a", 3800), "tail-of-the-sessioN"},
		{strings.Repeat("a", 3800)},
		{strings.Repeat("a", 3800), "tail-of-the-session", "x"},
		{strings.Repeat("a", 3800) + "tail-of-the-session"}, // the same bytes in one part
		{"short"},
	} {
		ps, n := parts(tc...)
		want := strings.Join(tc, "")
		for range 2 {
			if got := hc.join(ps, n); got != want {
				t.Errorf("join(%d parts) = %d bytes, want %d", len(tc), len(got), len(want))
			}
		}
	}
	// The slot of the first cookie may have been taken: its bytes stay right.
	if got := hc.join(a1, n); got != first {
		t.Errorf("the first cookie again: wrong bytes")
	}
	// Too long to keep, and no cache at all: joined each time.
	big, nb := parts(strings.Repeat("z", maxCachedHandle), "!")
	if hc.join(big, nb) != strings.Repeat("z", maxCachedHandle)+"!" {
		t.Error("an oversized handle joined wrong")
	}
	var none *handleCache
	if none.join(a1, n) != first {
		t.Error("a nil cache joined wrong")
	}
}
