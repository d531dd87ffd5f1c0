package faults_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/testenv"
)

// TestCoverageAfterKill9: an aggregator killed -9 right after it committed
// a batch, before acknowledging it, leaves coverage that the redelivery
// (all duplicates) does not change: the rows equal the union of the
// windows worked out by hand, and re-publishing everything changes
// nothing either.
func TestCoverageAfterKill9(t *testing.T) {
	e := newEnv(t, testenv.StartNATS(t).URL())
	ctx := context.Background()
	day := time.Date(2025, 6, 8, 0, 0, 0, 0, time.UTC)
	// east: 3 namespaces in one-minute windows from 00:00 to 03:00, silent
	// 01:00–01:30; west: 2 namespaces 10:00–10:30.
	var ss []sample.Sample
	for _, s := range gen("east", 3, day, 180, time.Minute) {
		if m := s.Start.Sub(day); m >= time.Hour && m < 90*time.Minute {
			continue
		}
		ss = append(ss, s)
	}
	ss = append(ss, gen("west", 2, day.Add(10*time.Hour), 30, time.Minute)...)
	if err := e.pub.Publish(ctx, ss); err != nil {
		t.Fatal(err)
	}
	l := newLedger()
	l.Add(ss...)

	child := e.startChild(envStopAt + "=committed:2")
	pid := child.Process.Pid
	testenv.Eventually(t, 30*time.Second, "the child stopped itself after its second commit", func() (bool, string) {
		s := procState(pid)
		return s == 'T', fmt.Sprintf("state %q", s)
	})
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	reader := e.store
	d := rollup.DayOf(day, time.UTC)
	before, err := reader.ClusterCoverage(ctx, d, d, "")
	if err != nil {
		t.Fatal(err)
	}
	info, err := e.consumerInfo()
	if err != nil {
		t.Fatal(err)
	}
	if len(before) == 0 || info.NumAckPending == 0 {
		t.Fatalf("the killed child committed nothing (coverage %v, ack pending %d): the test proves nothing", before, info.NumAckPending)
	}

	e.startAggregator()
	e.waitExact(l, 60*time.Second)
	want := []rollup.ClusterDay{
		{Cluster: "east", Day: d, Spans: []rollup.Span{{From: 0, To: 3600}, {From: 5400, To: 10800}}},
		{Cluster: "west", Day: d, Spans: []rollup.Span{{From: 36000, To: 37800}}},
	}
	check := func(when string) {
		t.Helper()
		got, err := reader.ClusterCoverage(ctx, d-1, d+1, "")
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: coverage %v, want %v", when, got, want)
		}
	}
	check("after the kill and the redelivery")
	if err := e.pub.Publish(ctx, ss); err != nil {
		t.Fatal(err)
	}
	e.waitExact(l, 60*time.Second)
	check("after publishing everything again")
	if dl := e.deadLetters(); len(dl) != 0 {
		t.Fatalf("dead letters %v", dl)
	}
}
