package events

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	lambdaevents "github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/nsqk/nsqk/shared/consumer"
	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/lastlocation"
	"github.com/nsqk/nsqk/shared/local/esm"
	"github.com/nsqk/nsqk/shared/location"
	"github.com/nsqk/nsqk/shared/monitor"
)

var update = flag.Bool("update", false, "rewrite the sample events")

const (
	shardID   = "shardId-000000000000"
	streamARN = "arn:aws:kinesis:us-east-1:000000000000:stream/nsqk-locations"
)

var base = time.UnixMilli(1764100000000).UTC()

// builder makes the Kinesis records of one sample: sequence numbers of real length, arrival
// times 10 ms apart, message ts 40 ms before arrival.
type builder struct {
	gen  *location.Generator
	recs []types.Record
}

func newBuilder(seed uint64) *builder {
	g := location.NewGenerator(4, seed)
	b := &builder{gen: g}
	g.Now = func() time.Time {
		return base.Add(time.Duration(len(b.recs))*10*time.Millisecond - 40*time.Millisecond)
	}
	return b
}

func (b *builder) add(pk string, data []byte) {
	arrival := base.Add(time.Duration(len(b.recs)) * 10 * time.Millisecond)
	b.recs = append(b.recs, types.Record{
		PartitionKey:                aws.String(pk),
		SequenceNumber:              aws.String(fmt.Sprintf("4966787484084263320450841286220844449445074385495916%04d", 5570+len(b.recs))),
		Data:                        data,
		ApproximateArrivalTimestamp: &arrival,
	})
}

// plain adds one location message as a plain record keyed by its user.
func (b *builder) plain() {
	body, user, _ := b.gen.Next(nil)
	b.add(user, body)
}

// aggregate adds n location messages as one KPL aggregate made by the project's aggregator
// (outer partition key "a", as the KPL does).
func (b *builder) aggregate(n int) {
	a := kpl.NewAggregator(kpl.AggregatorConfig{})
	for range n {
		body, user, _ := b.gen.Next(nil)
		if err := a.Add(user, "", body); err != nil {
			panic(err)
		}
	}
	r := a.Flush(nil)
	b.add(r.PartitionKey, r.Data)
}

// corruptAggregate adds an aggregate of n good messages followed by one whose partition key
// index is out of range (no aggregator writes that; built field by field).
func (b *builder) corruptAggregate(n int) {
	var body []byte
	var users []string
	var datas [][]byte
	for range n {
		d, u, _ := b.gen.Next(nil)
		users, datas = append(users, u), append(datas, d)
	}
	for _, u := range users {
		body = protowire.AppendTag(body, 1, protowire.BytesType)
		body = protowire.AppendString(body, u)
	}
	for i := range n + 1 {
		var rec []byte
		idx, data := uint64(i), []byte(`{"broken":true}`)
		if i < n {
			data = datas[i]
		} else {
			idx = uint64(len(users) + 5)
		}
		rec = protowire.AppendTag(rec, 1, protowire.VarintType)
		rec = protowire.AppendVarint(rec, idx)
		rec = protowire.AppendTag(rec, 3, protowire.BytesType)
		rec = protowire.AppendBytes(rec, data)
		body = protowire.AppendTag(body, 3, protowire.BytesType)
		body = protowire.AppendBytes(body, rec)
	}
	sum := md5.Sum(body)
	b.add("a", append(append([]byte(kpl.Magic), body...), sum[:]...))
}

func (b *builder) event() []byte {
	raw, err := esm.BuildEvent(shardID, streamARN, b.recs, esm.EventOptions{})
	if err != nil {
		panic(err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		panic(err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

func (b *builder) seq(i int) string { return *b.recs[i].SequenceNumber }

// sample is one event file and the response each function must give.
type sample struct {
	file string
	b    *builder
	// failed is the index of the record each function reports (-1: none).
	monitor, lastlocation int
}

func samples() []sample {
	var out []sample
	b := newBuilder(1)
	b.plain()
	b.plain()
	b.plain()
	out = append(out, sample{"plain.json", b, -1, -1})

	b = newBuilder(2)
	b.aggregate(4)
	b.aggregate(4)
	out = append(out, sample{"aggregated.json", b, -1, -1})

	b = newBuilder(3)
	b.plain()
	b.aggregate(3)
	b.plain()
	out = append(out, sample{"mixed.json", b, -1, -1})

	// A KPL aggregate that cannot be fully de-aggregated: both functions process the two good
	// user records, then report it; the ESM retries, bisects and sends it to the on-failure
	// destination.
	b = newBuilder(4)
	b.plain()
	b.corruptAggregate(2)
	b.plain()
	out = append(out, sample{"malformed.json", b, 1, 1})

	// A plain record that is not a location message: the monitor counts it (Malformed) and goes
	// on; lastlocation fails it so that it is never lost silently.
	b = newBuilder(5)
	b.plain()
	b.add("u000000009", []byte("this is not a location message"))
	b.aggregate(2)
	out = append(out, sample{"bad-payload.json", b, 1, 1})

	// One user's seq going back within the shard (5, then 4): the monitor counts an order
	// violation; lastlocation keeps seq 5 (the conditional write rejects 4).
	b = newBuilder(6)
	for _, s := range []int{4, 5, 4} {
		b.add("u000000001", []byte(fmt.Sprintf(`{"user_id":"u000000001","seq":%d,"ts":%d,"lat":48.137154,"lon":11.576124,"acc":5,"speed":0,"heading":0}`,
			s, base.UnixMilli()+int64(s))))
	}
	out = append(out, sample{"out-of-order.json", b, -1, -1})
	return out
}

func TestSamplesAreUpToDate(t *testing.T) {
	for _, s := range samples() {
		want := s.b.event()
		if *update {
			if err := os.WriteFile(s.file, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(s.file)
		if err != nil {
			t.Fatalf("%v (run `go test ./events -update`)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what the generator writes; run `go test ./events -update`", s.file)
		}
	}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func response(seq string) string {
	if seq == "" {
		return `{"batchItemFailures":[]}`
	}
	return `{"batchItemFailures":[{"itemIdentifier":"` + seq + `"}]}`
}

// Every sample through every function, via aws-lambda-go's own JSON handler path.
func TestSamplesThroughTheFunctions(t *testing.T) {
	for _, s := range samples() {
		payload, err := os.ReadFile(s.file)
		if err != nil {
			t.Fatal(err)
		}
		var ev lambdaevents.KinesisEvent
		if err := json.Unmarshal(payload, &ev); err != nil || len(ev.Records) != len(s.b.recs) {
			t.Fatalf("%s: %v", s.file, err)
		}
		setup := consumer.FunctionSetup{Metrics: io.Discard, Logger: quiet}
		mon := monitor.New(monitor.Config{FunctionSetup: setup})
		store := lastlocation.NewMemoryStore()
		ll := lastlocation.New(lastlocation.Config{FunctionSetup: setup, Store: store})
		for _, fn := range []struct {
			name   string
			h      lambda.Handler
			failed int
		}{
			{"monitor", lambda.NewHandler(mon.Handle), s.monitor},
			{"lastlocation", lambda.NewHandler(ll.Handle), s.lastlocation},
		} {
			out, err := fn.h.Invoke(context.Background(), payload)
			if err != nil {
				t.Fatalf("%s %s: %v", fn.name, s.file, err)
			}
			want := response("")
			if fn.failed >= 0 {
				want = response(s.b.seq(fn.failed))
			}
			if string(out) != want {
				t.Errorf("%s %s: %s, want %s", fn.name, s.file, out, want)
			}
		}
		switch s.file {
		case "bad-payload.json":
			if st := mon.Stats(); st.Malformed != 1 {
				t.Errorf("monitor stats %+v", st)
			}
		case "out-of-order.json":
			if st := mon.Stats(); st.OrderViolations != 1 {
				t.Errorf("monitor stats %+v", st)
			}
			l, _, _ := store.Get(context.Background(), "u000000001")
			if st := ll.Stats(); l.Seq != 5 || st.Stale != 1 {
				t.Errorf("lastlocation kept seq %d, stats %+v", l.Seq, st)
			}
		case "aggregated.json":
			if st := mon.Stats(); st.Records != 8 || st.OrderViolations != 0 {
				t.Errorf("monitor stats %+v", st)
			}
		}
	}
}
