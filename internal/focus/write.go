package focus

import (
	"compress/gzip"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"
)

// RowGroupRows bounds a Parquet row group: the writer holds one row group
// in memory (about 300 bytes a row before compression), so a day of any
// size is written in flat memory.
const RowGroupRows = 65_536

// createdBy is the Parquet footer's writer: fixed, so that the same rows
// give the same bytes whatever the build.
const createdBy = "costmeter focus export"

// ParquetWriter writes rows as Parquet, zstd-compressed. The same rows in
// the same order always give the same bytes.
type ParquetWriter struct {
	w    *parquet.GenericWriter[Row]
	rows int64
}

// NewParquetWriter starts a Parquet file on w.
func NewParquetWriter(w io.Writer) *ParquetWriter {
	return &ParquetWriter{w: parquet.NewGenericWriter[Row](w,
		parquet.Compression(&zstd.Codec{Level: zstd.SpeedDefault}),
		parquet.MaxRowsPerRowGroup(RowGroupRows),
		parquet.CreatedBy(createdBy, Version, "1"),
	)}
}

// Write appends rows.
func (p *ParquetWriter) Write(rows []Row) error {
	n, err := p.w.Write(rows)
	p.rows += int64(n)
	if err != nil {
		return fmt.Errorf("write parquet rows: %w", err)
	}
	return nil
}

// Rows is how many rows were written.
func (p *ParquetWriter) Rows() int64 { return p.rows }

// Close writes the footer (it does not close the underlying writer).
func (p *ParquetWriter) Close() error {
	if err := p.w.Close(); err != nil {
		return fmt.Errorf("close parquet file: %w", err)
	}
	return nil
}

// CSVWriter writes rows as gzipped CSV with a header of the column names:
// Decimals with Scale digits, Date/Times as ISO 8601 UTC, nulls as empty
// fields.
type CSVWriter struct {
	gz   *gzip.Writer
	w    *csv.Writer
	rows int64
	rec  []string
}

// NewCSVWriter starts a gzipped CSV file on w.
func NewCSVWriter(w io.Writer) (*CSVWriter, error) {
	gz, err := gzip.NewWriterLevel(w, gzip.DefaultCompression)
	if err != nil {
		return nil, fmt.Errorf("start gzip: %w", err)
	}
	c := &CSVWriter{gz: gz, w: csv.NewWriter(gz)}
	cols := Columns()
	header := make([]string, len(cols))
	for i, col := range cols {
		header[i] = col.Name
	}
	if err := c.w.Write(header); err != nil {
		return nil, fmt.Errorf("write csv header: %w", err)
	}
	return c, nil
}

// Write appends rows.
func (c *CSVWriter) Write(rows []Row) error {
	for i := range rows {
		c.rec = Record(&rows[i], c.rec[:0])
		if err := c.w.Write(c.rec); err != nil {
			return fmt.Errorf("write csv row: %w", err)
		}
		c.rows++
	}
	return nil
}

// Rows is how many rows were written.
func (c *CSVWriter) Rows() int64 { return c.rows }

// Close flushes the CSV and ends the gzip stream.
func (c *CSVWriter) Close() error {
	c.w.Flush()
	if err := c.w.Error(); err != nil {
		return fmt.Errorf("flush csv: %w", err)
	}
	if err := c.gz.Close(); err != nil {
		return fmt.Errorf("close gzip: %w", err)
	}
	return nil
}

// Record appends r's fields in Columns order to rec.
func Record(r *Row, rec []string) []string {
	d := func(x Dec) string { return x.String() }
	od := func(x *Dec) string {
		if x == nil {
			return ""
		}
		return x.String()
	}
	return append(rec,
		d(r.BilledCost), r.BillingAccountId, r.BillingAccountName, r.BillingCurrency,
		FormatTime(r.BillingPeriodEnd), FormatTime(r.BillingPeriodStart), r.ChargeCategory, str(r.ChargeClass),
		r.ChargeDescription, r.ChargeFrequency, FormatTime(r.ChargePeriodEnd), FormatTime(r.ChargePeriodStart),
		od(r.ConsumedQuantity), str(r.ConsumedUnit), d(r.ContractedCost), od(r.ContractedUnitPrice),
		d(r.EffectiveCost), r.InvoiceIssuerName, d(r.ListCost), od(r.ListUnitPrice), str(r.PricingCategory),
		od(r.PricingQuantity), str(r.PricingUnit), r.ProviderName, r.PublisherName,
		str(r.ResourceId), str(r.ResourceName), str(r.ResourceType), r.ServiceCategory, r.ServiceName,
		str(r.SubAccountId), str(r.SubAccountName), str(r.Tags),
		str(r.AllocatedMethodId), str(r.AllocatedMethodDetails), str(r.AllocatedResourceId),
		str(r.AllocatedResourceName), str(r.AllocatedTags),
		r.XCluster, r.XItem, od(r.XUsageQuantity), od(r.XRequestQuantity),
		strconv.FormatInt(r.XEffectiveFixed, 10), od(r.XCoverageRatio), od(r.XAllocatedRatio),
	)
}

// ReadParquet reads every row of a Parquet file this package wrote, in
// chunks, calling fn with each chunk (valid only during the call).
func ReadParquet(r io.ReaderAt, fn func([]Row) error) error {
	pr := parquet.NewGenericReader[Row](r)
	defer pr.Close()
	buf := make([]Row, 1024)
	for {
		n, err := pr.Read(buf)
		if n > 0 {
			if ferr := fn(buf[:n]); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read parquet rows: %w", err)
		}
	}
}
