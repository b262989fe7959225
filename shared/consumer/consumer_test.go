package consumer

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/nsqk/nsqk/shared/emf"
	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/emfread"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type userRec struct{ pk, ehk, data string }

// aggregate builds a KPL aggregate with the project's own aggregator.
func aggregate(t testing.TB, recs ...userRec) []byte {
	t.Helper()
	a := kpl.NewAggregator(kpl.AggregatorConfig{})
	for _, r := range recs {
		if err := a.Add(r.pk, r.ehk, []byte(r.data)); err != nil {
			t.Fatal(err)
		}
	}
	return a.Flush(nil).Data
}

// corruptAggregate builds an aggregate whose third record's partition key index is out of range.
func corruptAggregate() []byte {
	var body []byte
	body = protowire.AppendTag(body, 1, protowire.BytesType)
	body = protowire.AppendString(body, "k0")
	for i, d := range []string{"a", "b", "c"} {
		var rec []byte
		idx := uint64(0)
		if i == 2 {
			idx = 7
		}
		rec = protowire.AppendTag(rec, 1, protowire.VarintType)
		rec = protowire.AppendVarint(rec, idx)
		rec = protowire.AppendTag(rec, 3, protowire.BytesType)
		rec = protowire.AppendString(rec, d)
		body = protowire.AppendTag(body, 3, protowire.BytesType)
		body = protowire.AppendBytes(body, rec)
	}
	sum := md5.Sum(body)
	return append(append([]byte(kpl.Magic), body...), sum[:]...)
}

var t0 = time.UnixMilli(1764100000000)

func kinesisRecord(shard, seq, pk string, data []byte) events.KinesisEventRecord {
	return events.KinesisEventRecord{
		AwsRegion:      "us-east-1",
		EventID:        shard + ":" + seq,
		EventName:      "aws:kinesis:record",
		EventSource:    "aws:kinesis",
		EventSourceArn: "arn:aws:kinesis:us-east-1:000000000000:stream/s",
		EventVersion:   "1.0",
		Kinesis: events.KinesisRecord{
			ApproximateArrivalTimestamp: events.SecondsEpochTime{Time: t0},
			Data:                        data,
			PartitionKey:                pk,
			SequenceNumber:              seq,
			KinesisSchemaVersion:        "1.0",
		},
	}
}

// seen is what a recording handler saw.
type seen struct {
	Shard, Seq string
	Sub        int
	Agg        bool
	PK, EHK    string
	Data       string
}

type recorder struct {
	mu     sync.Mutex
	got    []seen
	failAt func(Record) error
}

func (h *recorder) handle(_ context.Context, r Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failAt != nil {
		if err := h.failAt(r); err != nil {
			return err
		}
	}
	h.got = append(h.got, seen{r.ShardID, r.SequenceNumber, r.SubSequence, r.Aggregated, r.PartitionKey, r.ExplicitHashKey, string(r.Data)})
	return nil
}

func (h *recorder) take() []seen {
	h.mu.Lock()
	defer h.mu.Unlock()
	g := h.got
	h.got = nil
	return g
}

func mixedEvent(t *testing.T) events.KinesisEvent {
	const sh = "shardId-000000000003"
	return events.KinesisEvent{Records: []events.KinesisEventRecord{
		kinesisRecord(sh, "100", "p1", []byte("plain-1")),
		kinesisRecord(sh, "200", "a", aggregate(t,
			userRec{"u1", "", "agg-0"}, userRec{"u2", "42", "agg-1"}, userRec{"u1", "", "agg-2"},
			userRec{"u3", "", "agg-3"}, userRec{"u2", "42", "agg-4"})),
		kinesisRecord(sh, "300", "p2", []byte("plain-2")),
	}}
}

func TestProcessesUserRecordsInOrderWithSubSequences(t *testing.T) {
	h := &recorder{}
	p := NewProcessor(h.handle, WithLogger(quiet))
	resp, err := p.Handle(context.Background(), mixedEvent(t))
	if err != nil || len(resp.BatchItemFailures) != 0 {
		t.Fatalf("resp %+v err %v", resp, err)
	}
	const sh = "shardId-000000000003"
	want := []seen{
		{sh, "100", 0, false, "p1", "", "plain-1"},
		{sh, "200", 0, true, "u1", "", "agg-0"},
		{sh, "200", 1, true, "u2", "42", "agg-1"},
		{sh, "200", 2, true, "u1", "", "agg-2"},
		{sh, "200", 3, true, "u3", "", "agg-3"},
		{sh, "200", 4, true, "u2", "42", "agg-4"},
		{sh, "300", 0, false, "p2", "", "plain-2"},
	}
	if d := cmp.Diff(want, h.take()); d != "" {
		t.Fatalf("handled records (-want +got):\n%s", d)
	}
}

func TestFailureAtSubRecordKReportsTheAggregateAndStops(t *testing.T) {
	for k := range 5 {
		t.Run(fmt.Sprint("k=", k), func(t *testing.T) {
			h := &recorder{failAt: func(r Record) error {
				if r.SequenceNumber == "200" && r.SubSequence == k {
					return errors.New("boom")
				}
				return nil
			}}
			p := NewProcessor(h.handle, WithLogger(quiet))
			resp, _ := p.Handle(context.Background(), mixedEvent(t))
			want := []events.KinesisBatchItemFailure{{ItemIdentifier: "200"}}
			if d := cmp.Diff(want, resp.BatchItemFailures); d != "" {
				t.Fatalf("failures (-want +got):\n%s", d)
			}
			got := h.take()
			if len(got) != 1+k {
				t.Fatalf("handled %d records, want %d (the plain one and sub-records 0..k-1): %+v", len(got), 1+k, got)
			}
			for _, s := range got {
				if s.Seq == "300" {
					t.Fatal("processing went on past the failure")
				}
			}
		})
	}
}

// redeliver returns the records Lambda sends again after a failure reported at seq: that record
// and every later one (Lambda "retries all records starting from that checkpoint").
func redeliver(ev events.KinesisEvent, seq string) events.KinesisEvent {
	for i, r := range ev.Records {
		if r.Kinesis.SequenceNumber == seq {
			return events.KinesisEvent{Records: ev.Records[i:]}
		}
	}
	return events.KinesisEvent{}
}

func TestCheckpointStoreSkipsSubRecordsAlreadyProcessedOnRedelivery(t *testing.T) {
	ev := mixedEvent(t)
	failures := map[int]bool{2: true, 4: true} // two transient failures in the aggregate
	calls := map[string]int{}
	h := &recorder{failAt: func(r Record) error {
		if r.SequenceNumber == "200" && failures[r.SubSequence] {
			delete(failures, r.SubSequence)
			return errors.New("transient")
		}
		return nil
	}}
	store := NewMemoryCheckpoints()
	p := NewProcessor(h.handle, WithLogger(quiet), WithCheckpointStore(store))
	delivery := ev
	for attempt := 1; ; attempt++ {
		if attempt > 5 {
			t.Fatal("never succeeded")
		}
		resp, _ := p.Handle(context.Background(), delivery)
		for _, s := range h.take() {
			calls[fmt.Sprint(s.Seq, "/", s.Sub)]++
		}
		if len(resp.BatchItemFailures) == 0 {
			if attempt != 3 {
				t.Fatalf("succeeded at attempt %d, want 3", attempt)
			}
			break
		}
		if got := resp.BatchItemFailures[0].ItemIdentifier; got != "200" {
			t.Fatalf("attempt %d reported %s", attempt, got)
		}
		delivery = redeliver(ev, "200")
	}
	want := map[string]int{"100/0": 1, "200/0": 1, "200/1": 1, "200/2": 1, "200/3": 1, "200/4": 1, "300/0": 1}
	if d := cmp.Diff(want, calls); d != "" {
		t.Fatalf("each user record must be handled exactly once (-want +got):\n%s", d)
	}
	if store.Len() != 0 {
		t.Fatalf("store keeps %d entries after the aggregate completed", store.Len())
	}
}

func TestWithoutCheckpointStoreRedeliveredSubRecordsAreProcessedAgain(t *testing.T) {
	ev := mixedEvent(t)
	failed := false
	h := &recorder{failAt: func(r Record) error {
		if r.SequenceNumber == "200" && r.SubSequence == 3 && !failed {
			failed = true
			return errors.New("transient")
		}
		return nil
	}}
	p := NewProcessor(h.handle, WithLogger(quiet))
	p.Handle(context.Background(), ev)
	h.take()
	p.Handle(context.Background(), redeliver(ev, "200"))
	if got := h.take(); len(got) != 6 || got[0].Sub != 0 {
		t.Fatalf("redelivery handled %+v; want the whole aggregate again (at least once) and the plain record", got)
	}
}

func TestPanicIsRecoveredAsAFailureOfThatRecord(t *testing.T) {
	h := &recorder{}
	p := NewProcessor(func(ctx context.Context, r Record) error {
		if r.SequenceNumber == "300" {
			var m map[string]int
			m["x"]++ // nil map write
		}
		return h.handle(ctx, r)
	}, WithLogger(quiet))
	resp, err := p.Handle(context.Background(), mixedEvent(t))
	if err != nil || len(resp.BatchItemFailures) != 1 || resp.BatchItemFailures[0].ItemIdentifier != "300" {
		t.Fatalf("resp %+v err %v", resp, err)
	}
	if n := len(h.take()); n != 6 {
		t.Fatalf("handled %d records before the panic, want 6", n)
	}
}

func TestStopsBeforeTheDeadlineAndReportsTheNextRecord(t *testing.T) {
	// A fake clock that each handler call advances by 20 minutes; the invocation deadline is
	// one (real) hour away and the margin 5 minutes: records at t=0, 20 and 40 minutes run, the
	// check before the fourth (t=60) finds less than the margin left.
	start := time.Now()
	var mu sync.Mutex
	now := start
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	h := &recorder{}
	var handlerDeadline time.Time
	p := NewProcessor(func(ctx context.Context, r Record) error {
		handlerDeadline, _ = ctx.Deadline()
		mu.Lock()
		now = now.Add(20 * time.Minute)
		mu.Unlock()
		return h.handle(ctx, r)
	}, WithLogger(quiet), WithClock(clock), WithDeadlineMargin(5*time.Minute))
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(time.Hour))
	defer cancel()
	resp, _ := p.Handle(ctx, mixedEvent(t))
	got := h.take()
	if len(got) != 3 {
		t.Fatalf("handled %d records, want 3", len(got))
	}
	if len(resp.BatchItemFailures) != 1 || resp.BatchItemFailures[0].ItemIdentifier != "200" {
		t.Fatalf("resp %+v, want the aggregate holding the 4th user record", resp)
	}
	if want := start.Add(time.Hour - 5*time.Minute); !handlerDeadline.Equal(want) {
		t.Fatalf("handler context deadline %v, want deadline - margin %v", handlerDeadline, want)
	}
}

func TestCancelledContextIsAFunctionErrorAtTheHeadOfTheBatch(t *testing.T) {
	h := &recorder{}
	p := NewProcessor(h.handle, WithLogger(quiet))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	resp, err := p.Handle(ctx, mixedEvent(t))
	if !errors.Is(err, ErrHeadOfBatch) || len(resp.BatchItemFailures) != 0 || len(h.take()) != 0 {
		t.Fatalf("resp %+v err %v", resp, err)
	}
}

// A failure at the first record with nothing processed is a function error (the ESM bisects);
// with progress, or further in, it is a partial response at the failed record.
func TestHeadOfBatchFailureWithoutProgressIsAFunctionError(t *testing.T) {
	for _, tc := range []struct {
		name     string
		event    func(events.KinesisEvent) events.KinesisEvent
		seq      string
		sub      int
		wantErr  bool
		wantItem string
	}{
		{"first plain record", func(ev events.KinesisEvent) events.KinesisEvent { return ev }, "100", 0, true, ""},
		{"first aggregate, first sub-record", func(ev events.KinesisEvent) events.KinesisEvent { return redeliver(ev, "200") }, "200", 0, true, ""},
		{"first aggregate after progress in it", func(ev events.KinesisEvent) events.KinesisEvent { return redeliver(ev, "200") }, "200", 2, false, "200"},
		{"second record", func(ev events.KinesisEvent) events.KinesisEvent { return ev }, "200", 0, false, "200"},
		{"last record", func(ev events.KinesisEvent) events.KinesisEvent { return ev }, "300", 0, false, "300"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &recorder{failAt: func(r Record) error {
				if r.SequenceNumber == tc.seq && r.SubSequence == tc.sub {
					return errors.New("boom")
				}
				return nil
			}}
			p := NewProcessor(h.handle, WithLogger(quiet))
			resp, err := p.Handle(context.Background(), tc.event(mixedEvent(t)))
			if tc.wantErr {
				if !errors.Is(err, ErrHeadOfBatch) || len(resp.BatchItemFailures) != 0 || len(h.take()) != 0 {
					t.Fatalf("resp %+v err %v, want a function error and nothing processed", resp, err)
				}
				return
			}
			want := []events.KinesisBatchItemFailure{{ItemIdentifier: tc.wantItem}}
			if d := cmp.Diff(want, resp.BatchItemFailures); err != nil || d != "" {
				t.Fatalf("err %v, failures (-want +got):\n%s", err, d)
			}
		})
	}
	// The same through the checkpoint store: a redelivered aggregate that fails again at the
	// sub-record it stopped at made no progress in this invocation.
	store := NewMemoryCheckpoints()
	h := &recorder{failAt: func(r Record) error {
		if r.SequenceNumber == "200" && r.SubSequence == 3 {
			return errors.New("poison")
		}
		return nil
	}}
	p := NewProcessor(h.handle, WithLogger(quiet), WithCheckpointStore(store))
	ev := redeliver(mixedEvent(t), "200")
	if resp, err := p.Handle(context.Background(), ev); err != nil || len(resp.BatchItemFailures) != 1 {
		t.Fatalf("first delivery: resp %+v err %v (sub-records 0..2 were processed: a partial response)", resp, err)
	}
	h.take()
	if resp, err := p.Handle(context.Background(), ev); !errors.Is(err, ErrHeadOfBatch) || len(resp.BatchItemFailures) != 0 || len(h.take()) != 0 {
		t.Fatalf("redelivery: resp %+v err %v, want a function error", resp, err)
	}
}

func TestCorruptAggregateProcessesRecordsBeforeTheFaultThenFails(t *testing.T) {
	const sh = "shardId-000000000000"
	ev := events.KinesisEvent{Records: []events.KinesisEventRecord{
		kinesisRecord(sh, "10", "x", []byte("before")),
		kinesisRecord(sh, "11", "a", corruptAggregate()),
		kinesisRecord(sh, "12", "y", []byte("after")),
	}}
	h := &recorder{}
	store := NewMemoryCheckpoints()
	var logs bytes.Buffer
	p := NewProcessor(h.handle, WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))), WithCheckpointStore(store))
	resp, err := p.Handle(context.Background(), ev)
	if err != nil || len(resp.BatchItemFailures) != 1 || resp.BatchItemFailures[0].ItemIdentifier != "11" {
		t.Fatalf("resp %+v err %v", resp, err)
	}
	var datas []string
	for _, s := range h.take() {
		datas = append(datas, s.Data)
	}
	if d := cmp.Diff([]string{"before", "a", "b"}, datas); d != "" {
		t.Fatalf("handled (-want +got):\n%s", d)
	}
	if !strings.Contains(logs.String(), "out of range") {
		t.Fatalf("the de-aggregation error is not logged: %s", logs.String())
	}
	// Redelivered: the two good sub-records are not processed again, and it fails again, now at
	// the head of the batch with nothing processed: a function error, so that the ESM bisects.
	resp, err = p.Handle(context.Background(), redeliver(ev, "11"))
	if !errors.Is(err, ErrHeadOfBatch) || len(resp.BatchItemFailures) != 0 || len(h.take()) != 0 {
		t.Fatalf("redelivery: resp %+v err %v", resp, err)
	}
}

func TestMetricsAreWrittenAsEMFAfterEveryBatch(t *testing.T) {
	var out bytes.Buffer
	nowT := t0.Add(1500 * time.Millisecond)
	reg := emf.New(emf.Config{Namespace: "NSQK/Consumer", Dimensions: []emf.Dimension{{Name: "Function", Value: "f"}}, Output: &out})
	h := &recorder{failAt: func(r Record) error {
		if r.SequenceNumber == "300" {
			return errors.New("no")
		}
		return nil
	}}
	p := NewProcessor(h.handle, WithLogger(quiet), WithClock(func() time.Time { return nowT }),
		WithMetrics(reg, func(r Record) (time.Time, bool) {
			if r.Aggregated {
				return t0.Add(-time.Duration(r.SubSequence) * time.Second), true
			}
			return time.Time{}, false
		}))
	ev := mixedEvent(t)
	ev.Records[2].Kinesis.ApproximateArrivalTimestamp.Time = t0.Add(time.Second) // newest
	p.Handle(context.Background(), ev)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one EMF document per batch, got %d", len(lines))
	}
	d, err := emfread.Decode([]byte(lines[0]))
	if err != nil {
		t.Fatal(err)
	}
	num := func(n string) float64 { return d.Metrics[n].Total() }
	if num("Records") != 6 || num("Failures") != 1 {
		t.Fatalf("Records %v Failures %v", num("Records"), num("Failures"))
	}
	if bs := d.Metrics["BatchSize"]; bs.Count != 1 || bs.Sum != 3 {
		t.Fatalf("BatchSize %+v", bs)
	}
	if lag := d.Metrics["Lag"]; lag.Count != 1 || lag.Sum != 500 || lag.Unit != emf.Milliseconds {
		t.Fatalf("Lag %+v, want one value of 500 ms", lag)
	}
	// E2E: sub-records 0..4 with ts = t0 - sub s, processed at t0+1.5s.
	e2e := d.Metrics["E2ELatency"]
	if e2e.Count != 5 || e2e.Sum != 1500+2500+3500+4500+5500 || e2e.Min != 1500 || e2e.Max != 5500 {
		t.Fatalf("E2ELatency %+v", e2e)
	}
}

func TestJSONMillisField(t *testing.T) {
	f := JSONMillisField("ts")
	for data, want := range map[string]int64{
		`{"user_id":"u000000001","seq":3,"ts":1764100000123,"lat":1}`: 1764100000123,
		`{"ts": 42}`:    42,
		" \n{\"ts\":7}": 7,
		`{"meta":{"ts":5},"note":"\"ts\":6","ts":42}`: 42,
	} {
		got, ok := f(Record{Data: []byte(data)})
		if !ok || got.UnixMilli() != want {
			t.Errorf("%s: %v %v", data, got, ok)
		}
	}
	for _, data := range []string{`{"seq":1}`, `{"ts":"x"}`, ``, `{"meta":{"ts":5}}`, `{"note":"\"ts\":6"}`, `["ts",1]`} {
		if _, ok := f(Record{Data: []byte(data)}); ok {
			t.Errorf("%q: got a timestamp", data)
		}
	}
}

// invokeJSON runs the processor through aws-lambda-go's own JSON handler path.
func invokeJSON(t *testing.T, p *Processor, payload []byte) events.KinesisEventResponse {
	t.Helper()
	out, err := lambda.NewHandler(p.Handle).Invoke(context.Background(), payload)
	if err != nil {
		t.Fatal(err)
	}
	var resp events.KinesisEventResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return resp
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRealLambdaEvents(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []seen
	}{
		{"aws-lambda-go__kinesis-event.json", []seen{
			{"shardId-000000000000", "49568167373333333333333333333333333333333333333333333333", 0, false, "s1", "", "Hello World"},
			{"shardId-000000000000", "49568167373333333334444444444444444444444444444444444444", 0, false, "s1", "", "Hello World"},
		}},
		{"kinesis-stream-consumer__aggregated-event.json", []seen{
			{"shardId-000000000000", "49570502000777654984918921872299215055880073276903391234", 0, true, "81622b0e-5ae8-4b53-a585-c6cb7780e680", "undefined", `{"a":"ABC"}`},
			{"shardId-000000000000", "49570502000777654984918921872299215055880073276903391234", 1, true, "25d4c3c1-31fe-424f-91f3-81241dcc6590", "undefined", `{"b":"DEF"}`},
		}},
		{"kinesis-stream-consumer__non-aggregated-event.json", []seen{
			{"shardId-000000000000", "49570502000777654984918922050444105982652642565245894658", 0, false, "0350c565-0cc9-4ec5-a552-1c5cf168f209", "", `{"a":"ABC"}`},
			{"shardId-000000000000", "49570502000777654984918922050446523834291871823595307010", 0, false, "f5cc71f0-c128-4686-82a3-10d41eeada64", "", `{"b":"DEF"}`},
		}},
		// eventID "1" has no shard part; both records carry sequence number "1".
		{"aws-lambda-fanout__multiple-kpl-event.json", []seen{
			{"", "1", 0, true, "key-0", "", "Testing KPL Aggregated Record 1-0"},
			{"", "1", 0, true, "key-0", "", "Testing KPL Aggregated Record 2-0"},
			{"", "1", 1, true, "key-1", "", "Testing KPL Aggregated Record 2-1"},
		}},
		{"powertools-python__kinesisStreamEvent.json", []seen{
			{"shardId-000000000006", "49590338271490256608559692538361571095921575989136588898", 0, false, "1", "", "Hello, this is a test."},
			{"shardId-000000000006", "49590338271490256608559692540925702759324208523137515618", 0, false, "1", "", "This is only a test."},
		}},
		{"aws-lambda-java-libs__kinesis_event.json", []seen{
			{"shardId-000000000000", "49545115243490985018280067714973144582180062593244200961", 0, false, "partitionKey-03", "", "Hello, this is a test 123."},
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			h := &recorder{}
			resp := invokeJSON(t, NewProcessor(h.handle, WithLogger(quiet)), readTestdata(t, tc.file))
			if len(resp.BatchItemFailures) != 0 {
				t.Fatalf("failures %+v", resp.BatchItemFailures)
			}
			if d := cmp.Diff(tc.want, h.take()); d != "" {
				t.Fatalf("(-want +got):\n%s", d)
			}
		})
	}
}

// The Powertools "getting started" pair: a handler that JSON-decodes each record fails on the
// second one ("success" is not JSON); the response must be the one Powertools documents.
func TestPowertoolsGettingStartedResponse(t *testing.T) {
	p := NewProcessor(func(_ context.Context, r Record) error {
		var v map[string]any
		return json.Unmarshal(r.Data, &v)
	}, WithLogger(quiet))
	got := invokeJSON(t, p, readTestdata(t, "powertools-python__getting_started_kinesis_event.json"))
	var want events.KinesisEventResponse
	if err := json.Unmarshal(readTestdata(t, "powertools-python__getting_started_kinesis_response.json"), &want); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("(-want +got):\n%s", d)
	}
}

// A real capture of CloudWatch Logs subscription data (gzip JSON) read through the processor.
func TestCloudWatchLogsCapture(t *testing.T) {
	var groups []string
	p := NewProcessor(func(_ context.Context, r Record) error {
		zr, err := gzip.NewReader(bytes.NewReader(r.Data))
		if err != nil {
			return err
		}
		var v struct {
			LogGroup  string `json:"logGroup"`
			LogEvents []any  `json:"logEvents"`
		}
		if err := json.NewDecoder(zr).Decode(&v); err != nil {
			return err
		}
		if len(v.LogEvents) == 0 {
			return errors.New("no log events")
		}
		groups = append(groups, v.LogGroup)
		return nil
	}, WithLogger(quiet))
	resp := invokeJSON(t, p, readTestdata(t, "powertools-python__kinesisStreamCloudWatchLogsEvent.json"))
	if len(resp.BatchItemFailures) != 0 || len(groups) != 2 || groups[0] == "" {
		t.Fatalf("resp %+v groups %q", resp, groups)
	}
}

func TestResponseJSONShape(t *testing.T) {
	p := NewProcessor(func(context.Context, Record) error { return nil }, WithLogger(quiet))
	out, err := lambda.NewHandler(p.Handle).Invoke(context.Background(), readTestdata(t, "aws-lambda-go__kinesis-event.json"))
	if err != nil || string(out) != `{"batchItemFailures":[]}` {
		t.Fatalf("%s %v", out, err)
	}
}

func TestInvokeReportsPanicsTimeoutsAndResponses(t *testing.T) {
	ok := Invoke(context.Background(), lambda.NewHandler(func(ctx context.Context) (string, error) {
		if _, has := ctx.Deadline(); !has {
			return "", errors.New("no deadline")
		}
		return "fine", nil
	}), []byte(`{}`), "f", time.Second)
	if ok.Err != nil || string(ok.Response) != `"fine"` || ok.RequestID == "" {
		t.Fatalf("%+v", ok)
	}
	pan := Invoke(context.Background(), lambda.NewHandler(func() error { panic("kaboom") }), []byte(`{}`), "f", time.Second)
	if pan.ErrorType != "Unhandled" || !strings.Contains(pan.Err.Error(), "kaboom") {
		t.Fatalf("%+v", pan)
	}
	to := Invoke(context.Background(), lambda.NewHandler(func(ctx context.Context) error {
		<-ctx.Done()
		return nil // a handler that ignores its deadline's meaning still times out
	}), []byte(`{}`), "f", 50*time.Millisecond)
	if to.ErrorType != "TimedOut" || to.Response != nil {
		t.Fatalf("%+v", to)
	}
}
