package rollup

import (
	"encoding/binary"
	"testing"
)

func TestDecodeValuesString(t *testing.T) {
	full := make([]byte, Fields*8)
	for i := 0; i < Fields; i++ {
		binary.BigEndian.PutUint64(full[i*8:], uint64(int64(i*1_000_003-5)))
	}
	for _, n := range []int{0, 3, 8, 13, 40, len(full)} {
		if got, want := decodeValuesString(string(full[:n])), DecodeValues(full[:n]); got != want {
			t.Fatalf("%d bytes: %v, want %v", n, got, want)
		}
	}
}
