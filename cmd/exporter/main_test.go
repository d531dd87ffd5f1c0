package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestBadConfigurationExits2(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--currency", "XYZ"}, `--currency: "XYZ" is not one of [CNY USD`},
		{[]string{"--from", "2026-13-01", "--to", "2026-12-01"}, `--from: "2026-13-01" is not a date YYYY-MM-DD`},
		{[]string{"--from", "2026-12-02", "--to", "2026-12-01"}, `--to: 2026-12-01 is before --from 2026-12-02`},
		{[]string{"--pricing", "/does/not/exist.yaml"}, `--pricing:`},
	} {
		var stderr bytes.Buffer
		if code := run(tc.args, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2", tc.args, code)
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: message lacks %q: %s", tc.args, tc.want, stderr.String())
		}
	}
}
