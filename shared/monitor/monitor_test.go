package monitor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/nsqk/nsqk/shared/consumer"
	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/emfread"
)

func msg(user string, seq uint64) []byte {
	return []byte(fmt.Sprintf(`{"user_id":%q,"seq":%d,"ts":1764100000000,"lat":1,"lon":2}`, user, seq))
}

func rec(shard, seq string, data []byte) events.KinesisEventRecord {
	return events.KinesisEventRecord{
		EventID: shard + ":" + seq,
		Kinesis: events.KinesisRecord{SequenceNumber: seq, PartitionKey: "a", Data: data,
			ApproximateArrivalTimestamp: events.SecondsEpochTime{Time: time.UnixMilli(1764100000100)}},
	}
}

func TestOrderCheckAndMetrics(t *testing.T) {
	var out, logs bytes.Buffer
	dl := &consumer.MemoryDeadLetters{}
	m := New(Config{consumer.FunctionSetup{Name: "mon", Metrics: &out, Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
		DeadLetters: dl, Now: func() time.Time { return time.UnixMilli(1764100000250) }}})
	agg := kpl.NewAggregator(kpl.AggregatorConfig{})
	for _, s := range []uint64{2, 3, 4} {
		if err := agg.Add("u000000001", "", msg("u000000001", s)); err != nil {
			t.Fatal(err)
		}
	}
	const a, b = "shardId-000000000000", "shardId-000000000001"
	ev := events.KinesisEvent{Records: []events.KinesisEventRecord{
		rec(a, "1", msg("u000000001", 1)),
		rec(a, "2", agg.Flush(nil).Data),
		rec(a, "3", msg("u000000001", 3)), // back in time: violation
		rec(a, "4", msg("u000000001", 4)), // again what was last seen: duplicate
		rec(a, "5", msg("u000000001", 9)), // 5..8 missing: gap
		rec(a, "6", []byte("garbage")),    // counted and dead-lettered; the batch goes on
		rec(b, "7", msg("u000000001", 1)), // another shard: its own sequence
	}}
	resp, err := m.Handle(context.Background(), ev)
	if err != nil || len(resp.BatchItemFailures) != 0 {
		t.Fatalf("%+v %v", resp, err)
	}
	want := Stats{Records: 8, OrderViolations: 1, Duplicates: 1, Gaps: 1, Malformed: 1, Keys: 2}
	if s := m.Stats(); s != want {
		t.Fatalf("stats %+v, want %+v", s, want)
	}
	if l := dl.Letters(); len(l) != 1 || l[0].SequenceNumber != "6" || l[0].DataBase64 != "Z2FyYmFnZQ==" ||
		!strings.Contains(l[0].Reason, "not a location message") {
		t.Fatalf("dead letters %+v", l)
	}
	if !strings.Contains(logs.String(), `"msg":"order violation: seq went back"`) || !strings.Contains(logs.String(), `"previous_seq":4`) {
		t.Fatalf("violation not logged with its context: %s", logs.String())
	}
	d, err := emfread.Decode(bytes.TrimSpace(out.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]float64{"OrderViolations": 1, "Duplicates": 1, "Gaps": 1, "Malformed": 1, "Records": 8, "DeadLetteredRecords": 1} {
		if got := d.Metrics[name].Total(); got != v {
			t.Errorf("%s = %v, want %v", name, got, v)
		}
	}
	if e := d.Metrics["E2ELatency"]; e.Count != 8 || e.Min != 250 || e.Max != 250 {
		t.Errorf("E2ELatency %+v (8 location messages, 250 ms each)", e)
	}
	if d.Namespace != "NSQK/Consumer" || d.Dimensions["Function"] != "mon" {
		t.Errorf("document %s %v", d.Namespace, d.Dimensions)
	}
}

func TestInOrderStreamHasNoViolations(t *testing.T) {
	m := New(Config{consumer.FunctionSetup{Metrics: io.Discard, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}})
	var recs []events.KinesisEventRecord
	for i := 1; i <= 50; i++ {
		recs = append(recs, rec("shardId-000000000000", fmt.Sprint(i), msg(fmt.Sprintf("u%09d", i%7), uint64(1+i/7))))
	}
	m.Handle(context.Background(), events.KinesisEvent{Records: recs})
	if s := m.Stats(); s.OrderViolations+s.Duplicates+s.Gaps+s.Malformed != 0 || s.Records != 50 {
		t.Fatalf("%+v", s)
	}
}
