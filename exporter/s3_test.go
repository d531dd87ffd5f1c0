package exporter_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"io"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/alauda/costmeter/exporter"
	"github.com/alauda/costmeter/internal/rollup"
)

// hiveKey is the layout of docs/export.md, written here by hand.
var hiveKey = regexp.MustCompile(`^billing_period=(\d{4}-\d{2})/(?:manifest\.json|charge_date=(\d{4}-\d{2})-\d{2}/focus\.(?:parquet|csv\.gz))$`)

// TestS3RoundTrip exports the fixture to s3://finops/costmeter/focus on
// an S3-compatible server (gofakes3, in memory, on loopback) reached the
// way the flags reach one (endpoint, static credentials, plain HTTP, path
// style), then reads the bucket back through the server's own backend:
// every key under the prefix in the Hive layout, the manifest listing
// exactly the data objects with their SHA-256 and sizes, row counts read
// by DuckDB (Parquet) and encoding/csv (CSV), and every object byte for
// byte the file target's export of the same data.
func TestS3RoundTrip(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	backend := s3mem.New()
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	t.Cleanup(srv.Close)
	const bucket, prefix = "finops", "costmeter/focus"
	if err := backend.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.config("s3://" + bucket + "/" + prefix)
	cfg.S3 = exporter.S3Config{Endpoint: u.Host, Region: "us-east-1", AccessKey: "costmeter-test",
		SecretKey: "costmeter-test-secret", Insecure: true, PathStyle: true}
	if err := e.exporter(t, cfg).Backfill(ctx, firstDay, lastDay); err != nil {
		t.Fatalf("export to S3: %v", err)
	}
	if err := e.exporter(t, e.config("file://"+e.dir)).Backfill(ctx, firstDay, lastDay); err != nil {
		t.Fatalf("export to a directory: %v", err)
	}
	want := files(t, e.dir)

	// Read the bucket back through the backend, not the exporter's client.
	list, err := backend.ListBucket(bucket, nil, gofakes3.ListBucketPage{})
	if err != nil {
		t.Fatal(err)
	}
	if list.IsTruncated {
		t.Fatal("listing truncated")
	}
	dl := t.TempDir()
	got := map[string][]byte{}
	for _, c := range list.Contents {
		name, ok := strings.CutPrefix(c.Key, prefix+"/")
		if !ok {
			t.Errorf("key %q is outside the prefix %s/", c.Key, prefix)
			continue
		}
		m := hiveKey.FindStringSubmatch(name)
		if m == nil {
			t.Errorf("key %q is not billing_period=YYYY-MM/{manifest.json,charge_date=YYYY-MM-DD/focus.{parquet,csv.gz}}", c.Key)
		} else if m[2] != "" && m[2] != m[1] {
			t.Errorf("key %q: charge date outside its billing period", c.Key)
		}
		o, err := backend.GetObject(bucket, c.Key, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(o.Contents)
		o.Contents.Close()
		if err != nil {
			t.Fatal(err)
		}
		got[name] = b
		p := filepath.Join(dl, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// 7 days with data × (Parquet + CSV) + one manifest.
	if len(got) != 15 || len(got) != len(want) {
		t.Fatalf("%d objects in the bucket, %d files in the directory export, want 15", len(got), len(want))
	}
	for name, b := range want {
		if !bytes.Equal(got[name], b) {
			t.Errorf("%s: the S3 object differs from the directory export's file", name)
		}
	}

	day := rollup.DayFromDate(2026, time.November, 2)
	m := checkManifest(t, dl, day, 7) // SHA-256 of every listed object
	listed := map[string]bool{exporter.ManifestPath(day): true}
	var queries []string
	var parquet []exporter.FileEntry
	for _, d := range m.Days {
		var rows int64
		for _, f := range d.Files {
			listed[f.Path] = true
			b, ok := got[f.Path]
			if !ok {
				t.Fatalf("manifest lists %s, not in the bucket", f.Path)
			}
			if int64(len(b)) != f.Bytes {
				t.Errorf("%s: %d bytes, manifest %d", f.Path, len(b), f.Bytes)
			}
			switch f.Format {
			case "parquet":
				rows += f.Rows
				parquet = append(parquet, f)
				queries = append(queries, "SELECT COUNT(*) AS n FROM read_parquet("+sqlString(filepath.Join(dl, f.Path))+")")
			case "csv.gz":
				if n := csvRecords(t, b); n != f.Rows {
					t.Errorf("%s: %d records, manifest %d", f.Path, n, f.Rows)
				}
			default:
				t.Errorf("%s: format %q", f.Path, f.Format)
			}
		}
		if rows != d.Rows {
			t.Errorf("%s: Parquet files hold %d rows, the day %d", d.ChargeDate, rows, d.Rows)
		}
	}
	for name := range got {
		if !listed[name] {
			t.Errorf("%s is in the bucket but not in the manifest", name)
		}
	}
	res := duckdb(t, queries...)
	for i, f := range parquet {
		if n := atoi(t, res[i][0]["n"]); n != f.Rows || n == 0 {
			t.Errorf("%s: DuckDB reads %d rows, manifest %d", f.Path, n, f.Rows)
		}
	}
}

// csvRecords counts the data records of a gzipped CSV with a header.
func csvRecords(t *testing.T, b []byte) int64 {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(zr).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 {
		t.Fatal("empty CSV: no header")
	}
	return int64(len(recs) - 1)
}
