package collector

import (
	"bufio"
	"context"
	"fmt"
	"io"

	"github.com/alauda/costmeter/internal/sample"
)

// ImportSummary tells what an import did.
type ImportSummary struct {
	Lines     int // non-empty lines read
	Accepted  int // valid samples, all acknowledged by JetStream
	Rejected  int // invalid lines, reported and skipped
	Messages  int // messages published
	Truncated bool
}

// MaxLineBytes bounds one NDJSON line; a longer line is rejected.
const MaxLineBytes = 1 << 20

// Import reads NDJSON samples (one object per line, each with its own
// cluster), reports each invalid line as "line N: reason" on report, and
// publishes the valid ones, returning when JetStream acknowledged them all.
// Importing the same file twice counts nothing twice: message ids are
// content hashes, and the aggregator's coverage catches the rest.
func Import(ctx context.Context, r io.Reader, pub *Publisher, report io.Writer) (ImportSummary, error) {
	var sum ImportSummary
	br := bufio.NewReaderSize(r, 64<<10)
	var batch []sample.Sample
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		msgs := pub.Encode(batch)
		if err := pub.PublishMessages(ctx, msgs); err != nil {
			return err
		}
		sum.Accepted += len(batch)
		sum.Messages += len(msgs)
		batch = batch[:0]
		return nil
	}
	for n := 1; ; n++ {
		line, tooLong, err := readLine(br)
		if err == io.EOF && len(line) == 0 && !tooLong {
			break
		}
		if err != nil && err != io.EOF {
			return sum, fmt.Errorf("read line %d: %w", n, err)
		}
		if tooLong {
			sum.Lines++
			sum.Rejected++
			fmt.Fprintf(report, "line %d: longer than %d bytes\n", n, MaxLineBytes)
			continue
		}
		if len(trimSpace(line)) == 0 {
			if err == io.EOF {
				break
			}
			continue
		}
		sum.Lines++
		s, verr := sample.DecodeOne(line)
		if verr != nil {
			sum.Rejected++
			fmt.Fprintf(report, "line %d: %v\n", n, verr)
		} else {
			batch = append(batch, s)
			if len(batch) >= 20*pub.maxBatch {
				if err := flush(); err != nil {
					return sum, err
				}
			}
		}
		if err == io.EOF {
			break
		}
	}
	return sum, flush()
}

// readLine returns the next line without its newline; a line longer than
// MaxLineBytes is consumed and reported as tooLong.
func readLine(br *bufio.Reader) (line []byte, tooLong bool, err error) {
	for {
		chunk, isPrefix, e := br.ReadLine()
		if len(line)+len(chunk) > MaxLineBytes {
			tooLong = true
		} else {
			line = append(line, chunk...)
		}
		if e != nil {
			return line, tooLong, e
		}
		if !isPrefix {
			return line, tooLong, nil
		}
	}
}

func trimSpace(b []byte) []byte {
	i, j := 0, len(b)
	for i < j && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	for j > i && (b[j-1] == ' ' || b[j-1] == '\t' || b[j-1] == '\r') {
		j--
	}
	return b[i:j]
}
