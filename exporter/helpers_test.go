package exporter_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/exporter"
	"github.com/alauda/costmeter/internal/pricing"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

// The fixture's month: samples on 2026-11-02..08, the clock at
// 2026-11-20 12:00 UTC, so those days are due (delay 1h).
var (
	firstDay = rollup.DayFromDate(2026, time.November, 1)
	lastDay  = rollup.DayFromDate(2026, time.November, 10)
	now      = time.Date(2026, time.November, 20, 12, 0, 0, 0, time.UTC)
)

const gib = 1 << 30

const retention = 20 * 365 * 24 * time.Hour

// Prices of the fixture (per unit-hour, Effective): Memory changes on the
// 5th.
const pricesYAML = `prices:
  - {item: Cpu, method: Effective, from: "2026-01-01", price: 0.35}
  - {item: Memory, method: Effective, from: "2026-01-01", price: 0.0123}
  - {item: Memory, method: Effective, from: "2026-11-05", price: 0.0456}
  - {item: Storage, method: Effective, from: "2026-01-01", price: 0.00017}
`

// priceOf is the test's own reading of pricesYAML: the decimal in force.
func priceOf(it rollup.Item, d rollup.Day) *big.Rat {
	var s string
	switch it {
	case rollup.Cpu:
		s = "0.35"
	case rollup.Memory:
		s = "0.0123"
		if d >= rollup.DayFromDate(2026, time.November, 5) {
			s = "0.0456"
		}
	default:
		s = "0.00017"
	}
	r, _ := new(big.Rat).SetString(s)
	return r
}

var namespaces = []rollup.Entity{
	{Project: "team", Cluster: "east", Namespace: "api"},
	{Project: "team", Cluster: "east.b", Namespace: "api"},
	{Project: "team", Cluster: "east", Namespace: "web"},
	{Project: "team-a", Cluster: "east", Namespace: "default"},
	{Project: "ops", Cluster: "west", Namespace: "mon"},
	{Project: "ops", Cluster: "west", Namespace: "idle"},
}

type env struct {
	redis      *testenv.Redis
	store      *rollup.Store
	natsURL    string
	js         jetstream.JetStream
	nc         *nats.Conn
	prices     *pricing.List
	pricesPath string
	dir        string
	api        *httptest.Server
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{redis: testenv.StartRedis(t)}
	var err error
	if e.store, err = rollup.NewStore(e.redis.Client(), time.UTC, retention); err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t)
	e.natsURL = n.URL()
	if e.nc, err = nats.Connect(n.URL()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.nc.Close)
	if e.js, err = jetstream.New(e.nc); err != nil {
		t.Fatal(err)
	}
	if err := stream.EnsureRollups(context.Background(), e.js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	e.pricesPath = filepath.Join(t.TempDir(), "prices.yaml")
	if err := os.WriteFile(e.pricesPath, []byte(pricesYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	if e.prices, err = pricing.Load(e.pricesPath); err != nil {
		t.Fatal(err)
	}
	e.dir = t.TempDir()
	gin.SetMode(gin.ReleaseMode)
	srv, err := api.New(api.Config{Listen: ":0", Currency: "EUR", PricingFile: e.pricesPath}, rollup.NewReader(e.redis.Client()), time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	e.api = httptest.NewServer(srv.Handler())
	t.Cleanup(e.api.Close)
	e.load(t, fixtureSamples())
	return e
}

// fixtureSamples are random windows of every namespace on 2026-11-02..08
// (idle's of zero usage), some crossing midnight.
func fixtureSamples() []sample.Sample {
	rng := rand.New(rand.NewPCG(7, 11))
	var out []sample.Sample
	from := time.Date(2026, time.November, 2, 0, 0, 0, 0, time.UTC)
	to := time.Date(2026, time.November, 9, 0, 0, 0, 0, time.UTC)
	for _, e := range namespaces {
		for at := from.Add(time.Duration(rng.IntN(3*3600)) * time.Second); ; {
			end := at.Add(time.Duration(600+rng.IntN(10*3600)) * time.Second)
			if end.After(to) {
				break
			}
			s := sample.Sample{Cluster: e.Cluster, Project: e.Project, Namespace: e.Namespace, Start: at, End: end}
			if e.Namespace != "idle" {
				s.CPU = sample.Resources{Usage: rng.Float64() * 8, Request: rng.Float64() * 8, Quota: 16}
				s.Memory = sample.Resources{Usage: rng.Float64() * 64 * gib, Request: 32 * gib, Quota: 128 * gib}
				eff := rng.Float64() * 100 * gib
				s.Storage = sample.Resources{Usage: rng.Float64() * 100 * gib, Request: 50 * gib, Quota: 200 * gib, Effective: &eff}
			}
			out = append(out, s)
			at = end.Add(time.Duration(rng.IntN(2*3600)) * time.Second)
		}
	}
	return out
}

// load applies samples through rollup.Split and Store.Apply and returns
// the changes (for rollup events).
func (e *env) load(t *testing.T, ss []sample.Sample) []rollup.Change {
	t.Helper()
	var cs []rollup.Contribution
	for i := range ss {
		s := &ss[i]
		if err := s.Validate(); err != nil {
			t.Fatal(err)
		}
		en := rollup.Entity{Project: s.Project, Cluster: s.Cluster, Namespace: s.Namespace}
		for _, p := range rollup.Split(s, time.UTC) {
			cs = append(cs, rollup.Contribution{Entity: en, Piece: p})
		}
	}
	var changes []rollup.Change
	for len(cs) > 0 {
		n := min(len(cs), 300)
		res, err := e.store.Apply(context.Background(), cs[:n], "test", nil, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range res.Verdicts {
			if v != rollup.Applied {
				t.Fatalf("verdict %c, want applied", v)
			}
		}
		changes = append(changes, res.Changes...)
		cs = cs[n:]
	}
	return changes
}

func (e *env) config(url string) exporter.Config {
	cfg := exporter.DefaultConfig()
	cfg.URL = url
	cfg.CSV = true
	cfg.LeaseTTL = 3 * time.Second
	cfg.WorkDir = ""
	return cfg
}

func (e *env) exporter(t *testing.T, cfg exporter.Config, opts ...exporter.Option) *exporter.Exporter {
	t.Helper()
	opts = append([]exporter.Option{exporter.WithClock(func() time.Time { return now }), exporter.WithPrices(e.prices)}, opts...)
	x, err := exporter.New(context.Background(), cfg, rollup.NewReader(e.redis.Client()), e.js, time.UTC, "EUR", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// apiRows asks the usage API for every row of a query (kind, item, Effective,
// step day, over the fixture's days).
func (e *env) apiRows(t *testing.T, kind string, it rollup.Item) []api.Row {
	t.Helper()
	v := url.Values{"start": {"2026-11-01"}, "end": {"2026-11-10"}, "step": {"day"}, "kind": {kind},
		"item": {it.String()}, "method": {"Effective"}, "pageSize": {"1000"}}
	resp, err := http.Get(e.api.URL + api.PlatformPath + "?" + v.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r api.Response
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != 200 {
		t.Fatalf("usage API: %d %v", resp.StatusCode, err)
	}
	if r.Total > len(r.Items) {
		t.Fatalf("usage API: %d rows on more than one page", r.Total)
	}
	return r.Items
}

// fixedOf recovers the exact fixed-point integer behind the API's float
// usage: Hours gives whole hours plus the rest over 3.6e9, and for usage
// below 2^20 hours the rest is recovered exactly by rounding.
func fixedOf(t *testing.T, hours float64) int64 {
	t.Helper()
	if hours >= 1<<20 {
		t.Fatalf("usage %v too large to recover exactly", hours)
	}
	whole := math.Floor(hours)
	rest := math.Round((hours - whole) * 3.6e9)
	return int64(whole)*3_600_000_000 + int64(rest)
}

// decimal9 formats num/den rounded half away from zero to 9 decimals, as
// the test's model of a Decimal(38,9) column.
func decimal9(q *big.Rat) string {
	neg := q.Sign() < 0
	a := new(big.Rat).Abs(q)
	a.Mul(a, big.NewRat(1_000_000_000, 1))
	n := new(big.Int).Quo(a.Num(), a.Denom())
	rest := new(big.Rat).Sub(a, new(big.Rat).SetInt(n))
	if rest.Cmp(big.NewRat(1, 2)) >= 0 {
		n.Add(n, big.NewInt(1))
	}
	s := fmt.Sprintf("%010s", n.String())
	out := s[:len(s)-9] + "." + s[len(s)-9:]
	if neg && n.Sign() != 0 {
		out = "-" + out
	}
	return out
}

// repoRoot finds the module root (where test/node lives).
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// duckdb runs queries in DuckDB through Node and returns their rows.
func duckdb(t *testing.T, queries ...string) [][]map[string]*string {
	t.Helper()
	root := repoRoot(t)
	mods := filepath.Join(root, "test", "node", "node_modules")
	if _, err := os.Stat(filepath.Join(mods, "@duckdb", "node-api")); err != nil {
		t.Fatalf("DuckDB for Node is not installed: run: npm ci --prefix test/node")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed: run: apt-get install nodejs npm && npm ci --prefix test/node")
	}
	in, _ := json.Marshal(queries)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(root, "exporter", "testdata", "duckdb.cjs"))
	cmd.Env = append(os.Environ(), "NODE_PATH="+mods)
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("duckdb: %v\n%s", err, stderr.String())
	}
	var out [][]map[string]*string
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("duckdb output: %v\n%s", err, stdout.String())
	}
	return out
}

func sqlString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func val(p *string) string {
	if p == nil {
		return "NULL"
	}
	return *p
}

func atoi(t *testing.T, s *string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(val(s), 10, 64)
	if err != nil {
		t.Fatalf("not an integer: %s", val(s))
	}
	return n
}

// files reads every file under dir (relative path -> bytes).
func files(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
