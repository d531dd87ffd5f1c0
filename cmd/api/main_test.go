package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/testenv"
)

func TestBadConfigurationExits2(t *testing.T) {
	for _, args := range [][]string{
		{"--currency", "XYZ"},
		{"--listen", "nowhere"},
		{"--timezone", "Mars/Olympus"},
		{"--pricing", "/does/not/exist.yaml"},
		{"--redis-url", "http://x"},
		{"--allocation-labels", "team,bad key"},
		{"--allocation-file", "/does/not/exist.yaml"},
	} {
		var stderr bytes.Buffer
		if code := run(args, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		if !strings.Contains(stderr.String(), args[0]) {
			t.Errorf("%v: message does not name the flag: %s", args, stderr.String())
		}
	}
}

func TestRefusesAnotherTimezone(t *testing.T) {
	r := testenv.StartRedis(t)
	shanghai, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Fatal(err)
	}
	other, err := rollup.NewStore(r.Client(), shanghai, rollup.DefaultRetention)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.CheckTimezone(context.Background()); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	code := run([]string{"--redis-url", r.URL(), "--timezone", "UTC", "--listen", "127.0.0.1:0", "--auth", "none"}, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "time zone") {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
}
