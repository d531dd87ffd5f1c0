package exporter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/big"
	"os"
	"sort"
	"time"

	"github.com/alauda/costmeter/internal/focus"
	"github.com/alauda/costmeter/internal/pricing"
	"github.com/alauda/costmeter/internal/rollup"
)

// pageRows is how many namespaces one read of the rollups asks for.
const pageRows = 1000

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// readManifest reads the manifest of d's billing period, or a new one.
func (x *Exporter) readManifest(ctx context.Context, d rollup.Day) (*Manifest, error) {
	first := rollup.MonthFirst(d)
	m := &Manifest{ExportVersion: ExportVersion, FocusVersion: focus.Version, BillingPeriod: period(d),
		BillingPeriodStart: first.Start(x.loc).UTC().Format(time.RFC3339),
		BillingPeriodEnd:   (rollup.MonthLast(d) + 1).Start(x.loc).UTC().Format(time.RFC3339),
		Timezone:           x.loc.String(), Currency: x.currency, DecimalPrecision: focus.Precision, DecimalScale: focus.Scale,
		Days: []DayEntry{}}
	r, _, err := x.target.Open(ctx, ManifestPath(d))
	if errors.Is(err, ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read manifest of %s: %w", period(d), err)
	}
	defer r.Close()
	var old Manifest
	if err := json.NewDecoder(r).Decode(&old); err != nil {
		return nil, fmt.Errorf("read manifest of %s: %w", period(d), err)
	}
	if old.ExportVersion == ExportVersion {
		m.Days = old.Days
	}
	return m, nil
}

// dayPrint is a day's fingerprint and what it was made of.
type dayPrint struct {
	sum        string
	namespaces int
	coverage   []rollup.ClusterDay
	prices     map[string]map[rollup.Item]*focus.Price // cluster -> item
	allocs     map[focus.OriginKey]focus.Allocation
}

// fingerprint hashes what day d's rows are made of: every cluster's day
// totals (any accepted sample changes its cluster's, or adds a
// namespace), the namespace count, the coverage, the Effective prices in
// force, the allocations and the export's identity. Its cost grows with
// clusters, not namespaces.
func (x *Exporter) fingerprint(ctx context.Context, d rollup.Day) (dayPrint, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s|%s|%s|%s|%s|%s|%s|%v\n", ExportVersion, x.loc, x.currency, x.cfg.AccountID, x.cfg.AccountName, x.cfg.IssuerName, chargeDate(d), x.cfg.CSV)
	b := []rollup.Bucket{{First: d, Last: d}}
	dp := dayPrint{prices: map[string]map[rollup.Item]*focus.Price{}}
	ns, err := x.src.Page(ctx, rollup.Selection{Scope: rollup.ScopeNamespace}, b, 0, 1)
	if err != nil {
		return dp, fmt.Errorf("count namespaces of %s: %w", chargeDate(d), err)
	}
	dp.namespaces = ns.Total
	fmt.Fprintf(h, "ns %d\n", ns.Total)
	for off := 0; ; off += pageRows {
		pg, err := x.src.Page(ctx, rollup.Selection{Scope: rollup.ScopeCluster}, b, off, pageRows)
		if err != nil {
			return dp, fmt.Errorf("read cluster totals of %s: %w", chargeDate(d), err)
		}
		for _, r := range pg.Rows {
			fmt.Fprintf(h, "cl %s %v\n", r.Entity.Cluster, r.Total)
			dp.prices[r.Entity.Cluster] = x.pricesOf(r.Entity.Cluster, d)
			for _, it := range rollup.Items() {
				if p := dp.prices[r.Entity.Cluster][it]; p != nil {
					fmt.Fprintf(h, "price %s %s %s/%d\n", r.Entity.Cluster, it, p.Num, p.Exp)
				}
			}
		}
		if off+pageRows >= pg.Total {
			break
		}
	}
	dp.coverage, err = x.src.ClusterCoverage(ctx, d, d, "")
	if err != nil {
		return dp, fmt.Errorf("read coverage of %s: %w", chargeDate(d), err)
	}
	for _, c := range dp.coverage {
		fmt.Fprintf(h, "cov %s %v\n", c.Cluster, c.Spans)
	}
	if x.alloc != nil {
		dp.allocs, err = x.alloc.Allocations(ctx, d)
		if err != nil {
			return dp, fmt.Errorf("read allocations of %s: %w", chargeDate(d), err)
		}
		keys := make([]focus.OriginKey, 0, len(dp.allocs))
		for k := range dp.allocs {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
		for _, k := range keys {
			j, _ := json.Marshal(dp.allocs[k])
			fmt.Fprintf(h, "alloc %v %s\n", k, j)
		}
	}
	dp.sum = hex.EncodeToString(h.Sum(nil))
	return dp, nil
}

// pricesOf returns the Effective prices of cluster's items on d (nil
// where none is listed), exact: pricing.Price counts 10^-PriceDecimals.
func (x *Exporter) pricesOf(cluster string, d rollup.Day) map[rollup.Item]*focus.Price {
	out := map[rollup.Item]*focus.Price{}
	if x.prices == nil {
		return out
	}
	for _, it := range rollup.Items() {
		if !x.prices.Has(it, rollup.Effective) {
			continue
		}
		p, ok := x.prices.Price(it, rollup.Effective, cluster, d)
		if !ok {
			continue
		}
		out[it] = &focus.Price{Num: big.NewInt(int64(p)), Exp: pricing.PriceDecimals}
	}
	return out
}

// exportDay writes day d's files and returns its manifest entry.
func (x *Exporter) exportDay(ctx context.Context, d rollup.Day, dp dayPrint) (DayEntry, error) {
	entry := DayEntry{ChargeDate: chargeDate(d), Fingerprint: dp.sum, Completeness: x.completeness(d, dp.coverage)}
	coverage := map[string]int64{}
	for _, c := range entry.Completeness {
		coverage[c.Cluster] = focus.RatioUnits(c.CoveredSeconds, c.DaySeconds)
	}
	prev, err := x.openDelivered(ctx, d)
	if err != nil {
		return entry, err
	}
	if prev != nil {
		defer prev.close()
	}
	out, err := x.newDayFiles()
	if err != nil {
		return entry, err
	}
	defer out.discard()
	day := focus.NewDay(focus.Issuer{AccountID: x.cfg.AccountID, AccountName: x.cfg.AccountName, Name: x.cfg.IssuerName, Currency: x.currency}, d, x.loc)
	m := merger{prev: prev, out: out}
	batch := make([]focus.Row, 0, 4*len(rollup.Items()))
	for off := 0; ; off += pageRows {
		pg, err := x.src.Page(ctx, rollup.Selection{Scope: rollup.ScopeNamespace}, []rollup.Bucket{{First: d, Last: d}}, off, pageRows)
		if err != nil {
			return entry, fmt.Errorf("read rollups of %s at %d: %w", chargeDate(d), off, err)
		}
		for i := range pg.Rows {
			r := &pg.Rows[i]
			v := &r.Total
			if len(r.Days) == 1 {
				v = &r.Days[0]
			}
			var tags map[string]string
			if x.labels != nil {
				if tags, err = x.labels.Labels(ctx, d, r.Entity); err != nil {
					return entry, fmt.Errorf("labels of %s: %w", r.Entity.Member(rollup.ScopeNamespace), err)
				}
			}
			cov, ok := coverage[r.Entity.Cluster]
			if !ok {
				cov = -1
			}
			batch = batch[:0]
			for _, it := range rollup.Items() {
				row, err := day.Origin(focus.Charge{Entity: r.Entity, Item: it, Values: v, Price: dp.prices[r.Entity.Cluster][it], CoverageUnits: cov, Tags: tags})
				if err != nil {
					return entry, err
				}
				if a, ok := dp.allocs[focus.KeyOf(&row)]; ok {
					split, err := focus.Split(row, a)
					if err != nil {
						return entry, fmt.Errorf("split %s %s: %w", *row.ResourceId, it, err)
					}
					batch = append(batch, split...)
					continue
				}
				batch = append(batch, row)
			}
			if err := m.add(batch); err != nil {
				return entry, err
			}
		}
		if off+pageRows >= pg.Total {
			break
		}
	}
	if err := m.finish(); err != nil {
		return entry, err
	}
	files, err := out.finish()
	if err != nil {
		return entry, err
	}
	entry.Rows, entry.Corrections = out.rows, out.corrections
	for _, f := range files {
		f.entry.Path = ParquetPath(d)
		if f.entry.Format != "parquet" {
			f.entry.Path = CSVPath(d)
		}
		if err := x.put(ctx, f, d); err != nil {
			return entry, err
		}
		entry.Files = append(entry.Files, f.entry)
	}
	return entry, nil
}

// completeness turns a day's coverage into the manifest's per-cluster
// completeness.
func (x *Exporter) completeness(d rollup.Day, cov []rollup.ClusterDay) []ClusterCompleteness {
	start := d.Start(x.loc)
	daySecs := int64((d + 1).Start(x.loc).Sub(start) / time.Second)
	out := make([]ClusterCompleteness, 0, len(cov))
	for _, c := range cov {
		covered := c.Covered()
		out = append(out, ClusterCompleteness{Cluster: c.Cluster, CoveredSeconds: covered, DaySeconds: daySecs,
			Ratio:         focus.FormatUnits(focus.RatioUnits(covered, daySecs)),
			Complete:      covered >= daySecs,
			LastSampleEnd: start.Add(time.Duration(c.LastEnd()) * time.Second).UTC().Format(time.RFC3339)})
	}
	return out
}

// put uploads one written file.
func (x *Exporter) put(ctx context.Context, f *dayFile, d rollup.Day) error {
	if _, err := f.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewind %s: %w", f.entry.Path, err)
	}
	if err := x.target.Put(ctx, f.entry.Path, f.f, f.entry.Bytes); err != nil {
		return fmt.Errorf("put %s of %s: %w", f.entry.Format, chargeDate(d), err)
	}
	return nil
}

// dayFile is one data file being written to the work directory.
type dayFile struct {
	f     *os.File
	h     hash.Hash
	n     *countWriter
	entry FileEntry
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// dayFiles writes a day's rows to its Parquet file and, with CSV, its CSV
// file.
type dayFiles struct {
	files []*dayFile
	pq    *focus.ParquetWriter
	csv   *focus.CSVWriter
	rows  int64
	// corrections counts the written rows of ChargeClass Correction,
	// delivered ones included.
	corrections int64
}

func (x *Exporter) newDayFiles() (*dayFiles, error) {
	out := &dayFiles{}
	open := func(format string) (*dayFile, error) {
		f, err := os.CreateTemp(x.cfg.WorkDir, "focus-*."+format)
		if err != nil {
			return nil, fmt.Errorf("create work file: %w", err)
		}
		df := &dayFile{f: f, h: sha256.New(), n: &countWriter{}, entry: FileEntry{Format: format}}
		out.files = append(out.files, df)
		return df, nil
	}
	pf, err := open("parquet")
	if err != nil {
		return nil, err
	}
	out.pq = focus.NewParquetWriter(io.MultiWriter(pf.f, pf.h, pf.n))
	if x.cfg.CSV {
		cf, err := open("csv.gz")
		if err != nil {
			out.discard()
			return nil, err
		}
		if out.csv, err = focus.NewCSVWriter(io.MultiWriter(cf.f, cf.h, cf.n)); err != nil {
			out.discard()
			return nil, err
		}
	}
	return out, nil
}

func (o *dayFiles) write(rows []focus.Row) error {
	if len(rows) == 0 {
		return nil
	}
	if err := o.pq.Write(rows); err != nil {
		return err
	}
	if o.csv != nil {
		if err := o.csv.Write(rows); err != nil {
			return err
		}
	}
	o.rows += int64(len(rows))
	for i := range rows {
		if rows[i].ChargeClass != nil {
			o.corrections++
		}
	}
	return nil
}

// finish closes the writers and fills the files' entries; paths are set
// by the caller's day.
func (o *dayFiles) finish() ([]*dayFile, error) {
	if err := o.pq.Close(); err != nil {
		return nil, err
	}
	if o.csv != nil {
		if err := o.csv.Close(); err != nil {
			return nil, err
		}
	}
	for _, f := range o.files {
		f.entry.Rows = o.rows
		f.entry.Bytes = f.n.n
		f.entry.SHA256 = hex.EncodeToString(f.h.Sum(nil))
	}
	return o.files, nil
}

// discard removes the work files.
func (o *dayFiles) discard() {
	for _, f := range o.files {
		f.f.Close()
		os.Remove(f.f.Name())
	}
}
