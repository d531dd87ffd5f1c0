package exporter

import (
	"encoding/json"
	"fmt"

	"github.com/alauda/costmeter/internal/rollup"
)

// Layout (the only place it is defined). Under the target's root, Hive
// partitions of the billing zone's month and day:
//
//	billing_period=YYYY-MM/charge_date=YYYY-MM-DD/focus.parquet  every row of the day (zstd)
//	billing_period=YYYY-MM/charge_date=YYYY-MM-DD/focus.csv.gz   the same rows as gzipped CSV (--export-csv)
//	billing_period=YYYY-MM/manifest.json                          written last (Manifest)
//
// A day's files keep their names when the day is rewritten: every Put
// replaces its object atomically, so a reader that lists a partition
// never sees two versions of a day, nor a part of one.
const (
	parquetFile  = "focus.parquet"
	csvFile      = "focus.csv.gz"
	manifestFile = "manifest.json"
)

// ExportVersion names this layout and row schema; it changes when either
// changes in a way readers must know about.
const ExportVersion = "costmeter-focus-export/1"

// period is a billing month's partition value, YYYY-MM.
func period(d rollup.Day) string {
	y, m, _ := d.Date()
	return fmt.Sprintf("%04d-%02d", y, int(m))
}

// chargeDate is a billing day's partition value, YYYY-MM-DD.
func chargeDate(d rollup.Day) string {
	y, m, dd := d.Date()
	return fmt.Sprintf("%04d-%02d-%02d", y, int(m), dd)
}

func dayDir(d rollup.Day) string {
	return "billing_period=" + period(d) + "/charge_date=" + chargeDate(d)
}

// ParquetPath is the Parquet file of day d.
func ParquetPath(d rollup.Day) string { return dayDir(d) + "/" + parquetFile }

// CSVPath is the gzipped CSV file of day d.
func CSVPath(d rollup.Day) string { return dayDir(d) + "/" + csvFile }

// ManifestPath is the manifest of d's billing period.
func ManifestPath(d rollup.Day) string { return "billing_period=" + period(d) + "/" + manifestFile }

// Manifest describes one billing period's export. It is written after
// every file it lists, so a reader that reads it first and then the files
// it lists (checking their SHA-256) reads complete files of one export.
// It holds nothing that changes between runs over the same data (no
// wall-clock time), so re-running an export rewrites it byte for byte.
type Manifest struct {
	ExportVersion string `json:"exportVersion"`
	FocusVersion  string `json:"focusVersion"`
	BillingPeriod string `json:"billingPeriod"`
	// BillingPeriodStart and End are the month's instants in UTC (start
	// inclusive, end exclusive), cut in Timezone.
	BillingPeriodStart string `json:"billingPeriodStart"`
	BillingPeriodEnd   string `json:"billingPeriodEnd"`
	Timezone           string `json:"timezone"`
	Currency           string `json:"currency"`
	// DecimalPrecision and DecimalScale are every Decimal column's.
	DecimalPrecision int        `json:"decimalPrecision"`
	DecimalScale     int        `json:"decimalScale"`
	Days             []DayEntry `json:"days"`
}

// DayEntry is one exported billing day.
type DayEntry struct {
	ChargeDate string `json:"chargeDate"`
	// Fingerprint is a hash of what the day's rows are made of (the
	// rollups' per-cluster totals, the namespace count, coverage, prices,
	// allocations): a day whose fingerprint changed is exported again.
	Fingerprint string `json:"fingerprint"`
	Rows        int64  `json:"rows"`
	// Corrections counts the rows of ChargeClass Correction.
	Corrections int64       `json:"corrections"`
	Files       []FileEntry `json:"files"`
	// Completeness is, per cluster, how much of the day its counted
	// samples cover (the coverage route's numbers): FOCUS 1.3's
	// completeness metadata of the day's time sector.
	Completeness []ClusterCompleteness `json:"completeness"`
}

// FileEntry is one data file.
type FileEntry struct {
	Path   string `json:"path"`
	Format string `json:"format"` // parquet or csv.gz
	Rows   int64  `json:"rows"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// ClusterCompleteness is one cluster on one billing day.
type ClusterCompleteness struct {
	Cluster        string `json:"cluster"`
	CoveredSeconds int64  `json:"coveredSeconds"`
	DaySeconds     int64  `json:"daySeconds"`
	// Ratio is CoveredSeconds/DaySeconds as a decimal of DecimalScale
	// digits.
	Ratio string `json:"ratio"`
	// Complete is true when every second of the day is covered.
	Complete bool `json:"complete"`
	// LastSampleEnd is the end of the cluster's newest counted window
	// within the day (RFC 3339, UTC): the sector's last update.
	LastSampleEnd string `json:"lastSampleEnd"`
}

// encode is the manifest's bytes: indented JSON, days in date order.
func (m *Manifest) encode() []byte {
	b, _ := json.MarshalIndent(m, "", "  ")
	return append(b, '\n')
}

// day returns the entry of date, or nil.
func (m *Manifest) day(date string) *DayEntry {
	for i := range m.Days {
		if m.Days[i].ChargeDate == date {
			return &m.Days[i]
		}
	}
	return nil
}

// put sets the entry of e.ChargeDate, keeping the days in date order.
func (m *Manifest) put(e DayEntry) {
	if old := m.day(e.ChargeDate); old != nil {
		*old = e
		return
	}
	m.Days = append(m.Days, e)
	for i := len(m.Days) - 1; i > 0 && m.Days[i].ChargeDate < m.Days[i-1].ChargeDate; i-- {
		m.Days[i], m.Days[i-1] = m.Days[i-1], m.Days[i]
	}
}
