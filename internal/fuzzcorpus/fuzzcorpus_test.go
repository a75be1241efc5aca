package fuzzcorpus

import (
	"reflect"
	"testing"
)

// TestEncodeDecode: what Encode writes, Decode reads back (integers
// widened to int64 and uint64), in the text go test itself reads.
func TestEncodeDecode(t *testing.T) {
	in := []any{"a\x00\"é\xff", []byte{0, 1, 0xfe}, true, 7, int64(-9), uint8(0x27), uint8(200), uint64(1 << 60)}
	b, err := Encode(in...)
	if err != nil {
		t.Fatal(err)
	}
	want := "go test fuzz v1\nstring(\"a\\x00\\\"é\\xff\")\n[]byte(\"\\x00\\x01\\xfe\")\nbool(true)\nint(7)\nint64(-9)\nbyte('\\'')\nbyte('È')\nuint64(1152921504606846976)\n"
	if string(b) != want {
		t.Fatalf("Encode:\n%s\nwant\n%s", b, want)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	wantVals := []any{"a\x00\"é\xff", []byte{0, 1, 0xfe}, true, int64(7), int64(-9), uint64(0x27), uint64(200), uint64(1 << 60)}
	if !reflect.DeepEqual(got, wantVals) {
		t.Fatalf("Decode = %#v, want %#v", got, wantVals)
	}
	if _, err := Encode(1.5); err == nil {
		t.Fatal("float64 encoded")
	}
	if _, err := Decode([]byte("go test fuzz v2\n")); err == nil {
		t.Fatal("v2 decoded")
	}
}
