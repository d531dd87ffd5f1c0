package console

import (
	"io/fs"
	"strings"
	"testing"
)

// TestVendoredEcharts: the vendored library is the pinned version, with its
// license and notice beside it (make console-vendor).
func TestVendoredEcharts(t *testing.T) {
	v, err := fs.ReadFile(static, "static/vendor/echarts/VERSION")
	if err != nil || strings.TrimSpace(string(v)) != EchartsVersion {
		t.Fatalf("vendored echarts %q (%v), want %s: run make console-vendor ECHARTS_VERSION=%s", v, err, EchartsVersion, EchartsVersion)
	}
	for _, f := range []string{"echarts.min.js", "LICENSE", "NOTICE"} {
		b, err := fs.ReadFile(static, "static/vendor/echarts/"+f)
		if err != nil || len(b) == 0 {
			t.Fatalf("%s: %v", f, err)
		}
	}
}
