package faults_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

// maxPayload is nats-server's default message size limit.
const maxPayload = 1 << 20

// TestHostileInput publishes malformed and hostile messages on the samples
// subject between good ones: each is dead-lettered with its reason and
// counted, the aggregator goes on, and the good samples count exactly.
func TestHostileInput(t *testing.T) {
	e := newEnv(t, testenv.StartNATS(t).URL())
	reader := sdkmetric.NewManualReader()
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("faults")
	e.startAggregator(aggregator.WithMeter(meter))
	ctx := context.Background()
	l := newLedger()

	before := gen("east", 10, time.Date(2025, 6, 2, 10, 0, 0, 0, time.UTC), 5, time.Minute)
	if err := e.pub.Publish(ctx, before); err != nil {
		t.Fatal(err)
	}
	l.Add(before...)

	one := func(project, namespace, values string) string {
		return fmt.Sprintf(`{"cluster":"east","project":%q,"namespace":%q,"start":"2025-06-02T00:00:00Z","end":"2025-06-02T00:01:00Z"%s}`, project, namespace, values)
	}
	// A valid batch just under the payload limit counts.
	var big []sample.Sample
	var bigBody []byte
	for _, s := range gen("east", 4000, time.Date(2025, 6, 2, 12, 0, 0, 0, time.UTC), 1, time.Minute) {
		next := sample.EncodeBatch(nil, append(big, s))
		if len(next) > maxPayload-4096 {
			break
		}
		big, bigBody = append(big, s), next
	}
	good := gen("east", 1, time.Date(2025, 6, 2, 13, 0, 0, 0, time.UTC), 1, time.Hour)
	tests := []struct {
		name   string
		body   string
		reason string // dead-letter reason, "" when nothing is dead-lettered
		count  int
	}{
		{"truncated object", `{"cluster":"east"`, aggregator.ReasonDecode, 1},
		{"not json", `not json at all`, aggregator.ReasonDecode, 1},
		{"broken array", `[{"cluster":"east"},`, aggregator.ReasonDecode, 1},
		{"NaN literal", one("p", "n", `,"cpu":{"usage":NaN}`), aggregator.ReasonDecode, 1},
		{"NaN string", one("p", "n", `,"cpu":{"usage":"NaN"}`), aggregator.ReasonInvalid, 1},
		{"negative", one("p", "n", `,"cpu":{"usage":-1}`), aggregator.ReasonInvalid, 1},
		{"overflowing number", one("p", "n", `,"memory":{"usage":1e999}`), aggregator.ReasonInvalid, 1},
		{"above the bound", one("p", "n", `,"storage":{"quota":1e300}`), aggregator.ReasonInvalid, 1},
		{"colon", one("a:b", "n", ""), aggregator.ReasonInvalid, 1},
		{"brace", one("p", "x{y}", ""), aggregator.ReasonInvalid, 1},
		{"star", one("p", "*", ""), aggregator.ReasonInvalid, 1},
		{"space", one("p", "has space", ""), aggregator.ReasonInvalid, 1},
		{"900 KB name", one("p", strings.Repeat("a", 900_000), ""), aggregator.ReasonInvalid, 1},
		{"unknown field", one("p", "n", `,"cpux":{}`), aggregator.ReasonInvalid, 1},
		{"mixed batch", "[" + string(sample.AppendJSON(nil, &good[0])) + "," + one("p", "BAD", "") + "]", aggregator.ReasonInvalid, 1},
		{"near-limit valid batch", string(bigBody), "", 0},
		{"large garbage", "[" + strings.Repeat("x", maxPayload-8192), aggregator.ReasonDecode, 1},
	}
	want := map[string]int{}
	for _, tt := range tests {
		if _, err := e.js.Publish(ctx, "cost.samples.east", []byte(tt.body)); err != nil {
			t.Fatalf("%s: publish: %v", tt.name, err)
		}
		if tt.reason != "" {
			want[tt.reason] += tt.count
		}
	}
	l.Add(good...)
	l.Add(big...)
	// Over the limit: refused by the server, nothing stored.
	if _, err := e.js.Publish(ctx, "cost.samples.east", make([]byte, maxPayload+1)); err == nil {
		t.Fatal("a message over the payload limit was accepted")
	}

	after := gen("east", 10, time.Date(2025, 6, 2, 14, 0, 0, 0, time.UTC), 5, time.Minute)
	if err := e.pub.Publish(ctx, after); err != nil {
		t.Fatal(err)
	}
	l.Add(after...)
	e.waitExact(l, 60*time.Second)
	testenv.Eventually(t, 10*time.Second, "dead letters by reason", func() (bool, string) {
		got := e.deadLetters()
		return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprintf("got %v, want %v", got, want)
	})
	// Each letter is counted once.
	if counted := deadLetterCounts(t, reader); fmt.Sprint(counted) != fmt.Sprint(want) {
		t.Errorf("dead-letter counter %v, want %v", counted, want)
	}
}

// TestDeadLetterCountedOnceAcrossRetry: a batch whose dead letter was
// stored but whose rollup events could not be (their stream is gone) is not
// acknowledged and is tried again until the events stream is back: the
// letter is stored once and counted once, however many attempts it took.
func TestDeadLetterCountedOnceAcrossRetry(t *testing.T) {
	e := newEnv(t, testenv.StartNATS(t).URL())
	reader := sdkmetric.NewManualReader()
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("faults")
	e.startAggregator(aggregator.WithMeter(meter))
	ctx := context.Background()
	testenv.Eventually(t, 10*time.Second, "the aggregator created the events stream", func() (bool, string) {
		_, err := e.js.Stream(ctx, stream.Rollups)
		return err == nil, fmt.Sprint(err)
	})
	if err := e.js.DeleteStream(ctx, stream.Rollups); err != nil {
		t.Fatal(err)
	}
	good := gen("east", 1, time.Date(2025, 6, 2, 8, 0, 0, 0, time.UTC), 1, time.Hour)
	l := newLedger()
	l.Add(good...)
	mixed := "[" + string(sample.AppendJSON(nil, &good[0])) + `,{"cluster":"east"}]`
	if _, err := e.js.Publish(ctx, "cost.samples.east", []byte(mixed)); err != nil {
		t.Fatal(err)
	}
	// The fault: the batch is delivered again and again, its letter stored.
	testenv.Eventually(t, 30*time.Second, "the batch failed at least twice after its letter was stored", func() (bool, string) {
		info, err := e.consumerInfo()
		if err != nil {
			return false, err.Error()
		}
		letters := e.deadLetters()
		return info.Delivered.Consumer >= 3 && letters[aggregator.ReasonInvalid] == 1 && info.AckFloor.Stream == 0,
			fmt.Sprintf("deliveries %d, ack floor %d, letters %v", info.Delivered.Consumer, info.AckFloor.Stream, letters)
	})
	if err := stream.EnsureRollups(ctx, e.js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	e.waitExact(l, 30*time.Second)
	if got := e.deadLetters(); fmt.Sprint(got) != fmt.Sprint(map[string]int{aggregator.ReasonInvalid: 1}) {
		t.Fatalf("dead letters %v", got)
	}
	if counted := deadLetterCounts(t, reader); fmt.Sprint(counted) != fmt.Sprint(map[string]int{aggregator.ReasonInvalid: 1}) {
		t.Fatalf("dead-letter counter %v, want each letter once", counted)
	}
}

// deadLetterCounts reads the aggregator's dead-letter counter by reason.
func deadLetterCounts(t *testing.T, r *sdkmetric.ManualReader) map[string]int {
	t.Helper()
	out := map[string]int{}
	for reason, n := range testenv.CounterBy(t, r, "cost.aggregator.samples.deadlettered", "reason") {
		out[reason] = int(n)
	}
	return out
}

// TestDeadLetterAtPayloadLimit: a malformed message just under the payload
// limit is dead-lettered like any other. With its reason headers the whole
// message would exceed the limit, so the letter's data is cut to fit (the
// original stays in the samples stream at Cost-Stream-Seq) and marked.
func TestDeadLetterAtPayloadLimit(t *testing.T) {
	e := newEnv(t, testenv.StartNATS(t).URL())
	e.startAggregator()
	ctx := context.Background()
	if _, err := e.js.Publish(ctx, "cost.samples.east", []byte("["+strings.Repeat("x", maxPayload-64))); err != nil {
		t.Fatal(err)
	}
	l := newLedger()
	after := gen("east", 10, time.Date(2025, 6, 2, 14, 0, 0, 0, time.UTC), 5, time.Minute)
	if err := e.pub.Publish(ctx, after); err != nil {
		t.Fatal(err)
	}
	l.Add(after...)
	e.waitExact(l, 30*time.Second)
	if got := e.deadLetters(); got[aggregator.ReasonDecode] != 1 {
		t.Fatalf("dead letters %v, want one decode", got)
	}
	st, err := e.js.Stream(ctx, stream.DeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, stream.DeadLetterPrefix+aggregator.ReasonDecode)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(stream.HeaderTruncated) != strconv.Itoa(maxPayload-63) || len(m.Data) >= maxPayload-63 {
		t.Fatalf("letter of %d bytes with %s %q, want the data cut and the original length named", len(m.Data), stream.HeaderTruncated, m.Header.Get(stream.HeaderTruncated))
	}
}
