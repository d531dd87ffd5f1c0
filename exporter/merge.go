package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/parquet-go/parquet-go"

	"github.com/alauda/costmeter/internal/focus"
	"github.com/alauda/costmeter/internal/rollup"
)

// delivered streams the rows of a day's file as it was delivered, in the
// file's order (focus.Row.Key, a key's first export before its
// corrections).
type delivered struct {
	f    *os.File
	r    *parquet.GenericReader[focus.Row]
	buf  []focus.Row
	at   int
	err  error
	done bool
}

// openDelivered fetches day d's delivered Parquet file to the work
// directory and opens it; nil when the day was never delivered.
func (x *Exporter) openDelivered(ctx context.Context, d rollup.Day) (*delivered, error) {
	rc, _, err := x.target.Open(ctx, ParquetPath(d))
	if errors.Is(err, ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read delivered %s: %w", chargeDate(d), err)
	}
	defer rc.Close()
	f, err := os.CreateTemp(x.cfg.WorkDir, "delivered-*.parquet")
	if err != nil {
		return nil, fmt.Errorf("create work file: %w", err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("read delivered %s: %w", chargeDate(d), err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("read delivered %s: %w", chargeDate(d), err)
	}
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("open delivered %s: %w", chargeDate(d), err)
	}
	return &delivered{f: f, r: parquet.NewGenericReader[focus.Row](pf), buf: make([]focus.Row, 0, 1024)}, nil
}

func (p *delivered) close() {
	p.r.Close()
	p.f.Close()
	os.Remove(p.f.Name())
}

// peek returns the next row without consuming it (nil at the end).
func (p *delivered) peek() (*focus.Row, error) {
	for p.at >= len(p.buf) {
		if p.done {
			return nil, p.err
		}
		p.buf = p.buf[:cap(p.buf)]
		n, err := p.r.Read(p.buf)
		p.buf, p.at = p.buf[:n], 0
		if err == io.EOF {
			p.done = true
		} else if err != nil {
			p.done, p.err = true, fmt.Errorf("read delivered rows: %w", err)
		}
	}
	return &p.buf[p.at], nil
}

// group consumes the rows of the next key, appending them to into.
func (p *delivered) group(into []focus.Row) ([]focus.Row, string, error) {
	first, err := p.peek()
	if first == nil || err != nil {
		return into, "", err
	}
	key := first.Key()
	for {
		r, err := p.peek()
		if err != nil {
			return into, "", err
		}
		if r == nil || r.Key() != key {
			return into, key, nil
		}
		into = append(into, *r)
		p.at++
	}
}

// merger writes a day's current rows, keeping what was delivered: with
// no delivered file the rows as they are; otherwise every delivered row
// unchanged, followed, per key, by a Correction row for what changed
// since (a key delivered but gone now is corrected to zero; a key new
// since is a Correction of its whole amount).
type merger struct {
	prev *delivered
	out  *dayFiles

	pending    []focus.Row // delivered rows of pendingKey, not yet written
	pendingKey string
	have       bool
	scratch    []focus.Row
}

// add takes the current rows of one namespace (keys ascending).
func (m *merger) add(rows []focus.Row) error {
	if m.prev == nil {
		return m.out.write(rows)
	}
	for i := range rows {
		if err := m.one(&rows[i]); err != nil {
			return err
		}
	}
	return nil
}

// next loads the next delivered key group into pending.
func (m *merger) next() error {
	var err error
	m.pending, m.pendingKey, err = m.prev.group(m.pending[:0])
	m.have = m.pendingKey != ""
	return err
}

func (m *merger) one(now *focus.Row) error {
	key := now.Key()
	for {
		if !m.have {
			if err := m.next(); err != nil {
				return err
			}
		}
		if !m.have || m.pendingKey > key {
			// New since delivery.
			c, _ := focus.Correction(nil, now)
			return m.out.write([]focus.Row{c})
		}
		if m.pendingKey == key {
			return m.flushPending(now)
		}
		if err := m.flushPending(nil); err != nil { // delivered, gone now
			return err
		}
	}
}

// flushPending writes the pending delivered rows and their correction
// towards now (nil: towards zero).
func (m *merger) flushPending(now *focus.Row) error {
	sum := focus.Sum(m.pending)
	target := now
	if target == nil {
		zero := sum
		zero.ChargeClass = nil
		for _, p := range []**focus.Dec{&zero.ConsumedQuantity, &zero.PricingQuantity, &zero.XUsageQuantity, &zero.XRequestQuantity} {
			if *p != nil {
				z := focus.DecOf(0)
				*p = &z
			}
		}
		z := focus.DecOf(0)
		zero.BilledCost, zero.ContractedCost, zero.EffectiveCost, zero.ListCost = z, z, z, z
		target = &zero
	}
	m.scratch = append(m.scratch[:0], m.pending...)
	if c, ok := focus.Correction(&sum, target); ok {
		m.scratch = append(m.scratch, c)
	}
	m.have = false
	return m.out.write(m.scratch)
}

// finish writes the delivered keys after the last current one.
func (m *merger) finish() error {
	if m.prev == nil {
		return nil
	}
	for {
		if !m.have {
			if err := m.next(); err != nil {
				return err
			}
			if !m.have {
				return nil
			}
		}
		if err := m.flushPending(nil); err != nil {
			return err
		}
	}
}
