package consumer

import (
	"context"
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/nsqk/nsqk/shared/emf"
	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/localtest"
)

// cpuTime is the user + system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchEvent is one invocation's batch: records Kinesis records, each a KPL aggregate of per
// location-sized user records (about 150 bytes of JSON with a ts field).
func benchEvent(b *testing.B, records, per int) events.KinesisEvent {
	var ev events.KinesisEvent
	n := 0
	for i := 0; i < records; i++ {
		a := kpl.NewAggregator(kpl.AggregatorConfig{})
		for j := 0; j < per; j++ {
			n++
			user := fmt.Sprintf("u%09d", n%1000)
			msg := fmt.Sprintf(`{"user_id":%q,"seq":%d,"ts":%d,"lat":48.137154,"lon":11.576124,"acc":5,"speed":1.5,"heading":90}`,
				user, n, t0.UnixMilli()+int64(n))
			if err := a.Add(user, "", []byte(msg)); err != nil {
				b.Fatal(err)
			}
		}
		ev.Records = append(ev.Records, kinesisRecord("shardId-000000000000", fmt.Sprint(1000+i), "a", a.Flush(nil).Data))
	}
	return ev
}

// BenchmarkHappyPath is the consumer's cost per user record when nothing fails, with the
// checkpoints in memory and in DynamoDB (dynalite on this machine: one consistent GetItem per
// invocation, nothing written). The handler does nothing, so the figures are the processor's own
// cost (de-aggregation, metrics, the checkpoint read), the part the store could change; the
// wall time includes the round trip of the read.
func BenchmarkHappyPath(b *testing.B) {
	shapes := []struct{ records, per int }{{100, 50}, {10, 10}}
	stores := []struct {
		name string
		new  func(b *testing.B) CheckpointStore
	}{
		{"memory", func(*testing.B) CheckpointStore { return NewMemoryCheckpoints() }},
		{"dynamodb", func(b *testing.B) CheckpointStore {
			c := localtest.Dynamo(b).Client()
			return NewDynamoCheckpoints(c, localtest.Table(b, c, "id"), "bench", 24*time.Hour)
		}},
	}
	for _, sh := range shapes {
		ev := benchEvent(b, sh.records, sh.per)
		users := sh.records * sh.per
		for _, st := range stores {
			b.Run(fmt.Sprintf("batch=%dx%d/store=%s", sh.records, sh.per, st.name), func(b *testing.B) {
				reg := emf.New(emf.Config{Namespace: Namespace, Output: io.Discard})
				p := NewProcessor(func(context.Context, Record) error { return nil }, WithLogger(quiet),
					WithCheckpointStore(st.new(b)), WithMetrics(reg, JSONMillisField("ts")))
				ctx := context.Background()
				b.ReportAllocs()
				cpu0 := cpuTime()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					resp, _ := p.Handle(ctx, ev)
					if len(resp.BatchItemFailures) != 0 {
						b.Fatal(resp)
					}
				}
				b.StopTimer()
				n := float64(b.N * users)
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/user-record")
				// CPU of this process only (not dynalite's): steadier than wall time on a busy machine.
				b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/n, "cpu-ns/user-record")
			})
		}
	}
}
