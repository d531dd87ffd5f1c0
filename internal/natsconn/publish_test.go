package natsconn_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/testenv"
)

// TestPublishAll publishes more messages than the window holds, some
// twice, some to a subject no stream takes: one result per message, in
// order, duplicates marked, the failures named, the rest stored.
func TestPublishAll(t *testing.T) {
	ns := testenv.StartNATS(t)
	nc, js, err := natsconn.Connect(ns.URL(), "test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
	n := 2*natsconn.PublishWindow + 17
	var msgs []*nats.Msg
	for i := range n {
		subj := "t.x"
		if i%500 == 7 {
			subj = "nostream.x"
		}
		m := nats.NewMsg(subj)
		m.Data = []byte(fmt.Sprint(i))
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprint(i%(n-100))) // the last 100 repeat the first ids
		msgs = append(msgs, m)
	}
	res := natsconn.PublishAll(ctx, js, msgs)
	if len(res) != n {
		t.Fatalf("%d results for %d messages", len(res), n)
	}
	stored, dups, failed := 0, 0, 0
	for i, r := range res {
		switch {
		case msgs[i].Subject == "nostream.x":
			if r.Err == nil || !errors.Is(r.Err, jetstream.ErrNoStreamResponse) && !errors.Is(r.Err, nats.ErrNoResponders) {
				t.Errorf("message %d to no stream: %v", i, r.Err)
			}
			failed++
		case r.Err != nil:
			t.Errorf("message %d: %v", i, r.Err)
		case r.Ack.Duplicate:
			dups++
		default:
			stored++
		}
	}
	if natsconn.FirstError(res) == nil {
		t.Error("FirstError found no error")
	}
	st, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if int(info.State.Msgs) != stored || failed != 5 || stored+dups+failed != n || dups == 0 {
		t.Fatalf("stream holds %d, stored %d, duplicates %d, failed %d of %d", info.State.Msgs, stored, dups, failed, n)
	}
}
