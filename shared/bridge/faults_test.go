package bridge

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nsqk/nsqk/shared/local/kinesisfault"
	"github.com/nsqk/nsqk/shared/location"
)

// orderCheck verifies per-user order in stream order: each seq is the next one, or a duplicate of
// one already seen (at-least-once redelivery of a whole aggregate). Anything else is a loss or a
// reorder.
type orderCheck struct {
	last map[string]uint64
	seen map[string]map[uint64]bool
	dups int
}

func newOrderCheck() *orderCheck {
	return &orderCheck{last: map[string]uint64{}, seen: map[string]map[uint64]bool{}}
}

func (c *orderCheck) add(t *testing.T, user string, seq uint64) {
	t.Helper()
	if c.seen[user] == nil {
		c.seen[user] = map[uint64]bool{}
	}
	switch {
	case seq == c.last[user]+1:
		c.last[user] = seq
	case c.seen[user][seq]:
		c.dups++
	default:
		t.Fatalf("user %s: seq %d after %d: lost or reordered", user, seq, c.last[user])
	}
	c.seen[user][seq] = true
}

func publishLocations(h *harness, n, users int) {
	gen := location.NewGenerator(users, uint64(n))
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i], _, _ = gen.Next(nil)
	}
	h.publish(h.topic, bodies)
}

func checkStream(t *testing.T, h *harness, want int) *orderCheck {
	t.Helper()
	oc := newOrderCheck()
	recs := h.readStream()
	for _, u := range recs {
		m, err := location.Parse(u.data)
		if err != nil {
			t.Fatal(err)
		}
		oc.add(t, m.UserID, m.Seq)
	}
	total := 0
	for _, l := range oc.last {
		total += int(l)
	}
	if total != want {
		t.Fatalf("stream has %d distinct messages, published %d", total, want)
	}
	if len(recs) != want+oc.dups {
		t.Fatalf("%d records = %d distinct + %d duplicates?", len(recs), want, oc.dups)
	}
	return oc
}

// Throttled entries, 500s and connections reset before the write: every message exactly once,
// per-key order kept through the retries.
func TestStrictOrderThroughThrottlingAndErrors(t *testing.T) {
	h := newHarness(t, 3)
	front := h.faultFront()
	front.Set(kinesisfault.Faults{EntryFailRate: 0.3, RequestErrorRate: 0.05, ResetBeforeRate: 0.05})

	o := h.options()
	o.MaxRecordSize = 8 << 10 // many small aggregates: many retries interleaved with new records
	o.RetryInitial, o.RetryMax = time.Millisecond, 20*time.Millisecond
	o.KeyBuckets = 2
	publishLocations(h, 4000, 40)
	r := h.start(o)
	waitFor(t, 90*time.Second, "all messages acknowledged", func() bool {
		return testutil.ToFloat64(r.b.m.messagesAcked) == 4000
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	st := front.Stats()
	if st.EntriesFailed == 0 || st.RequestErrors == 0 || st.ResetsBefore == 0 {
		t.Fatalf("faults were not exercised: %+v", st)
	}
	if testutil.ToFloat64(r.b.m.retries) == 0 {
		t.Fatal("no retries counted")
	}
	oc := checkStream(t, h, 4000)
	if oc.dups != 0 {
		t.Fatalf("%d duplicates without any write-then-reset fault", oc.dups)
	}
}

// A connection reset after Kinesis wrote the record: the bridge cannot know it was written, so it
// retries: duplicates of whole aggregates are allowed (at-least-once), loss and reorder are not.
func TestResetAfterWriteGivesDuplicatesNeverLossOrReorder(t *testing.T) {
	h := newHarness(t, 2)
	front := h.faultFront()
	front.Set(kinesisfault.Faults{ResetAfterRate: 0.2})
	o := h.options()
	o.MaxRecordSize = 8 << 10
	o.RetryInitial, o.RetryMax = time.Millisecond, 20*time.Millisecond
	publishLocations(h, 2000, 20)
	r := h.start(o)
	waitFor(t, 90*time.Second, "all messages acknowledged", func() bool {
		return testutil.ToFloat64(r.b.m.messagesAcked) == 2000
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if front.Stats().ResetsAfter == 0 {
		t.Fatal("no reset-after-write was injected")
	}
	oc := checkStream(t, h, 2000)
	t.Logf("duplicates from %d resets after write: %d", front.Stats().ResetsAfter, oc.dups)
}
