package esm

import (
	"context"
	"io"
	"sync"
	"testing"

	"github.com/nsqk/nsqk/shared/consumer"
	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/lastlocation"
	"github.com/nsqk/nsqk/shared/local/emfread"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/location"
	"github.com/nsqk/nsqk/shared/monitor"
)

// The wiring `nsqk dev` uses: both consumer functions, each behind its own mapping, on one
// stream at the same time, their EMF output summarised.
func TestTwoMappingsOnOneStream(t *testing.T) {
	c, stream := client(t, kinesislocal.Kinesalite, 2)
	gen := location.NewGenerator(20, 7)
	last := map[string]uint64{}
	var recs []kpl.Record
	total := 0
	for i := 0; i < 60; i++ {
		if i%3 == 0 { // an aggregate of three messages (of random users), routed by its outer key
			a := kpl.NewAggregator(kpl.AggregatorConfig{OuterPartitionKey: location.UserID(i % 20)})
			for range 3 {
				body, user, seq := gen.Next(nil)
				a.Add(user, "", body)
				last[user] = max(last[user], seq)
				total++
			}
			recs = append(recs, a.Flush(nil))
			continue
		}
		body, user, seq := gen.Next(nil)
		recs = append(recs, plain(user, string(body)))
		last[user] = max(last[user], seq)
		total++
	}
	put(t, c, stream, recs...)

	summary := &emfread.Summary{}
	var out sync.Mutex
	metrics := &emfread.LineWriter{Summary: summary, Next: lockedDiscard{&out}}
	mon := monitor.New(monitor.Config{FunctionSetup: consumer.FunctionSetup{Name: "nsqk-monitor", Metrics: metrics, Logger: quiet}})
	store := lastlocation.NewMemoryStore()
	ll := lastlocation.New(lastlocation.Config{FunctionSetup: consumer.FunctionSetup{Name: "nsqk-lastlocation", Metrics: metrics, Logger: quiet}, Store: store})
	base := Config{Stream: stream, BatchSize: 10, ReportBatchItemFailures: true, BisectBatchOnFunctionError: true,
		MaximumRetryAttempts: 3, OnFailure: t.TempDir() + "/on-failure.jsonl"}
	cm, cl := base, base
	cm.FunctionName, cl.FunctionName = "nsqk-monitor", "nsqk-lastlocation"
	rm := start(t, c, mon.Handle, cm) // one monitor behind every instance: its statistics sum them all
	rl := start(t, c, ll.Handle, cl)
	sm := rm.waitDone(t, int64(len(recs)))
	sl := rl.waitDone(t, int64(len(recs)))
	if sm.OnFailureRecords+sl.OnFailureRecords != 0 || sm.FunctionErrors+sl.FunctionErrors != 0 {
		t.Fatalf("monitor %+v lastlocation %+v", sm, sl)
	}
	if st := mon.Stats(); st.Records != int64(total) || st.OrderViolations != 0 {
		// A user's messages reach both shards (in aggregates routed by another key, and as plain
		// records): per shard they still only go up (gaps, never violations), and the stored
		// location is the highest seq whichever shard delivered it last.
		t.Fatalf("monitor %+v, want %d records and no violation", st, total)
	}
	for user, seq := range last {
		l, ok, _ := store.Get(context.Background(), user)
		if !ok || l.Seq != seq {
			t.Fatalf("%s: stored seq %d, want %d", user, l.Seq, seq)
		}
	}
	recsMetric, _ := summary.Get("Records")
	if recsMetric.Sum != float64(2*total) {
		t.Fatalf("EMF Records total %v, want %d (both functions)", recsMetric.Sum, 2*total)
	}
	if e2e, ok := summary.Get("E2ELatency"); !ok || e2e.Count != float64(2*total) {
		t.Fatalf("E2ELatency %+v", e2e)
	}
}

type lockedDiscard struct{ mu *sync.Mutex }

func (l lockedDiscard) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return io.Discard.Write(p)
}
