package chaos

import (
	"context"
	"fmt"
	"hash/fnv"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/nsqk/nsqk/cmd/nsqk/internal/promq"
	"github.com/nsqk/nsqk/shared/bridge"
	"github.com/nsqk/nsqk/shared/local/kinesisfault"
)

const (
	ruleExactlyOnce = "exactly-once: lost=0, duplicated=0, reordered=0, no good message dead-lettered, graceful stop returns nil"
	ruleResend      = "at-least-once: lost=0, reordered=0; duplicates allowed only as whole re-sent records (a retried entry whose answer was lost), counted; graceful stop returns nil"
)

// window is a publish-while-faulty scenario with an in-process bridge.
type window struct {
	shards        int32
	users         int
	rate          int
	before, after time.Duration
	fault         time.Duration
	apply, clear  func(r *Rig) error
	options       func(o *bridge.Options)
	rig           RigOptions
}

type windowRun struct {
	r  *Rig
	b  *InProc
	a  Accounting
	mf promq.Families
}

// runWindow publishes at a steady rate for before+fault+after, with the fault active in the
// middle, waits until NSQ has nothing pending, stops the bridge gracefully and accounts.
func runWindow(ctx context.Context, t *T, w window) (*windowRun, error) {
	if w.rig.Shards == 0 {
		w.rig.Shards = w.shards
	}
	r, err := t.NewRig(ctx, w.rig)
	if err != nil {
		return nil, err
	}
	o := r.BridgeOptions()
	if w.options != nil {
		w.options(&o)
	}
	b, err := r.StartReady(ctx, o)
	if err != nil {
		return nil, err
	}
	pub, done, err := r.PublishUntil(ctx, w.users, seedOf(t.Dir), w.rate, w.before+w.fault+w.after, w.before)
	if err != nil {
		return nil, err
	}
	if err := w.apply(r); err != nil {
		return nil, err
	}
	t.Event("fault on (%s)", w.fault)
	if err := hold(ctx, w.fault); err != nil {
		return nil, err
	}
	if err := w.clear(r); err != nil {
		return nil, err
	}
	t.Event("fault off")
	if err := <-done; err != nil {
		return nil, err
	}
	t.Event("published %d; waiting for NSQ to drain", pub.Sent())
	end, err := r.EndInProc(ctx, b, 3*time.Minute)
	if err != nil {
		return nil, err
	}
	noteFront(t, r.Front.Stats())
	return &windowRun{r: r, b: b, a: end.A, mf: end.MF}, nil
}

// noteBridge copies the bridge's own counters into the notes and metrics (context only: the
// verdict never depends on them).
func noteBridge(t *T, f promq.Families) {
	get := func(n string, l ...string) float64 { return f.Value("nsqk_bridge_"+n, l...) }
	m := map[string]any{
		"messages_in": get("messages_in_total"), "messages_acked": get("messages_acked_total"),
		"retries": get("retries_total"), "touches": get("touches_total"), "late_redeliveries": get("late_redeliveries_total"),
		"aggregates": get("aggregates_total"), "misrouted_entries": get("misrouted_entries_total"),
		"shard_map_changes": get("shard_map_changes_total"), "open_shards": get("open_shards"),
		"dead_letter_failures": get("dead_letter_failures_total"), "out_of_order_deliveries": get("out_of_order_deliveries_total"),
	}
	if rd := f.ByLabel("nsqk_bridge_redelivered_total", "state"); len(rd) > 0 {
		m["redelivered"] = rd
	}
	failed := f.ByLabel("nsqk_bridge_putrecords_failed_entries_total", "code")
	if len(failed) > 0 {
		m["putrecords_failed_entries"] = failed
	}
	if rq := f.ByLabel("nsqk_bridge_messages_requeued_total", "cause"); len(rq) > 0 {
		m["messages_requeued"] = rq
	}
	if dl := f.ByLabel("nsqk_bridge_dead_lettered_total", "reason"); len(dl) > 0 {
		m["dead_lettered"] = dl
	}
	t.Metric("bridge", m)
	t.Note("bridge metrics: in %.0f, acked %.0f, retries %.0f, failed entries %s, touches %.0f, redelivered %s, late redeliveries %.0f, out-of-order first deliveries %.0f",
		get("messages_in_total"), get("messages_acked_total"), get("retries_total"), fmtCounts(failed), get("touches_total"),
		fmtCounts(f.ByLabel("nsqk_bridge_redelivered_total", "state")), get("late_redeliveries_total"), get("out_of_order_deliveries_total"))
}

func fmtCounts(m map[string]float64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	for i, k := range keys {
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, "%s=%.0f", k, m[k])
	}
	return sb.String()
}

func noteFront(t *T, s kinesisfault.Stats) {
	t.Metric("front", s)
	t.Note("fault front: %d requests, %d forwarded, %d entries failed, %d request errors, %d delayed, %d resets before, %d resets after",
		s.Requests, s.Forwarded, s.EntriesFailed, s.RequestErrors, s.Delayed, s.ResetsBefore, s.ResetsAfter)
}

func setFaults(f kinesisfault.Faults) func(r *Rig) error {
	return func(r *Rig) error { r.Front.Set(f); return nil }
}

var noFaults = setFaults(kinesisfault.Faults{})

func kinesisCases() []Case {
	failedEntries := func(w *windowRun, code string) float64 {
		return w.mf.Value("nsqk_bridge_putrecords_failed_entries_total", "code", code)
	}
	return []Case{
		windowCase(Case{
			Name: "kinesis-throttle", Group: "kinesis", Quick: true,
			Summary: "ProvisionedThroughputExceeded on 30% of PutRecords entries for 30 s (quick: 4 s) while publishing",
			Rule:    ruleExactlyOnce + "; the fault was injected",
		}, func(t *T) window {
			w := frontWindow(t, kinesisfault.Faults{EntryFailRate: 0.3}, 30*time.Second, 4*time.Second)
			w.shards = 3
			return w
		}, injected("entries failed", func(s kinesisfault.Stats) int64 { return s.EntriesFailed }), Expect{}),
		windowCase(Case{
			Name: "kinesis-500", Group: "kinesis",
			Summary: "30% of PutRecords requests answered 500 InternalFailure (not written) for 15 s (quick: 4 s)",
			Rule:    ruleExactlyOnce + "; the fault was injected",
		}, func(t *T) window {
			return frontWindow(t, kinesisfault.Faults{RequestErrorRate: 0.3}, 15*time.Second, 4*time.Second)
		}, injected("request errors", func(s kinesisfault.Stats) int64 { return s.RequestErrors }), Expect{}),
		windowCase(Case{
			Name: "kinesis-timeout", Group: "kinesis",
			Summary: "every PutRecords held 2 s, past the bridge's --put-timeout 1s, for 10 s (quick: 4 s); timed-out requests are never forwarded",
			Rule:    ruleExactlyOnce + "; requests timed out",
		}, func(t *T) window {
			w := frontWindow(t, kinesisfault.Faults{Delay: 2 * time.Second}, 10*time.Second, 4*time.Second)
			w.options = func(o *bridge.Options) { o.PutTimeout = time.Second }
			return w
		}, func(t *T, w *windowRun) {
			timeouts := failedEntries(w, "Timeout")
			t.Check("requests timed out", w.r.Front.Stats().Delayed > 0 && timeouts > 0,
				"%d requests delayed by the front; the bridge counted %.0f entries failed with Timeout", w.r.Front.Stats().Delayed, timeouts)
		}, Expect{}),
		windowCase(Case{
			Name: "kinesis-reset-before", Group: "kinesis",
			Summary: "30% of PutRecords connections reset before the write, for 10 s (quick: 4 s)",
			Rule:    ruleExactlyOnce + "; the fault was injected",
		}, func(t *T) window {
			return frontWindow(t, kinesisfault.Faults{ResetBeforeRate: 0.3}, 10*time.Second, 4*time.Second)
		}, injected("resets", func(s kinesisfault.Stats) int64 { return s.ResetsBefore }), Expect{}),
		windowCase(Case{
			Name: "kinesis-reset-after", Group: "kinesis", Quick: true,
			Summary: "20% of PutRecords connections reset after Kinesis wrote the records (the answer is lost), for 10 s (quick: 4 s)",
			Rule:    ruleResend + "; the fault was injected",
		}, func(t *T) window {
			return frontWindow(t, kinesisfault.Faults{ResetAfterRate: 0.2}, 10*time.Second, 4*time.Second)
		}, injected("resets after the write", func(s kinesisfault.Stats) int64 { return s.ResetsAfter }),
			Expect{MaxDup: -1, DupWhy: "the bridge cannot know a reset request was written, so it retries it", SameRecordDupsOnly: true}),
		windowCase(Case{
			Name: "kinesis-down", Group: "kinesis",
			Summary: "the Kinesis endpoint down (connection refused) for 60 s (quick: 5 s) while publishing, then back",
			Rule:    ruleResend + " (requests cut by the outage may have been written)",
		}, func(t *T) window {
			w := frontWindow(t, kinesisfault.Faults{}, 60*time.Second, 5*time.Second)
			w.rate = t.N(100, 200)
			w.before, w.after = t.Dur(3*time.Second, time.Second), t.Dur(5*time.Second, 2*time.Second)
			w.apply, w.clear = func(r *Rig) error { r.Front.Down(); return nil }, func(r *Rig) error { return r.Front.Up() }
			return w
		}, func(t *T, w *windowRun) {
			failed := 0.0
			for _, n := range w.mf.ByLabel("nsqk_bridge_putrecords_failed_entries_total", "code") {
				failed += n
			}
			t.Check("the outage was felt", failed > 0, "the bridge counted %.0f failed entries", failed)
		}, Expect{MaxDup: -1, DupWhy: "requests in flight when the endpoint went down may have been written", SameRecordDupsOnly: true}),
		windowCase(Case{
			Name: "kinesis-kms-throttle", Group: "kinesis",
			Summary: "KMSThrottlingException on 30% of PutRecords entries for 15 s (quick: 4 s)",
			Rule:    ruleExactlyOnce + "; the fault was injected",
		}, func(t *T) window {
			return frontWindow(t, kinesisfault.Faults{EntryFailRate: 0.3, EntryErrorCode: "KMSThrottlingException"}, 15*time.Second, 4*time.Second)
		}, func(t *T, w *windowRun) {
			kms := failedEntries(w, "KMSThrottlingException")
			t.Check("fault injected", w.r.Front.Stats().EntriesFailed > 0 && kms > 0,
				"%d entries failed at the front; the bridge counted %.0f KMSThrottlingException", w.r.Front.Stats().EntriesFailed, kms)
		}, Expect{}),
		{
			Name: "kinesis-stream-deleted", Group: "kinesis", Quick: true,
			Summary: "the stream is deleted under a running bridge program (child process) while publishing",
			Rule: "the program exits non-zero with a clear ResourceNotFound error; nothing FINished that was not written: " +
				"every published message is in the stream (as written before the deletion, from the wire log), dead-lettered, or back in NSQ; " +
				"no per-key reorder in what was written",
			Run: streamDeleted,
		},
	}
}

// streamDeleted deletes the stream under a child bridge. What was in the stream is taken from the
// tap's wire log (the stream itself is gone); what is left in NSQ is drained and counted.
func streamDeleted(ctx context.Context, t *T) error {
	r, err := t.NewRig(ctx, RigOptions{Shards: 2})
	if err != nil {
		return err
	}
	c, err := r.StartChild(ctx, "bridge")
	if err != nil {
		return err
	}
	pub, err := r.NewPublisher(200, 7)
	if err != nil {
		return err
	}
	pctx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	done := pub.Go(pctx, 200, time.Hour)
	if err := hold(ctx, t.Dur(4*time.Second, 2*time.Second)); err != nil {
		return err
	}
	t.Event("deleting the stream (%d published so far, %d records written)", pub.Sent(), len(r.Tap.Accepted()))
	if _, err := r.KC.DeleteStream(ctx, &kinesis.DeleteStreamInput{StreamName: aws.String(r.Stream)}); err != nil {
		return err
	}
	code, werr := c.Wait(time.Minute)
	stopPub()
	if err := <-done; err != nil {
		return err
	}
	if werr != nil {
		t.Check("the program exits", false, "%v; log tail:\n%s", werr, c.Tail(10))
		c.Signal(syscall.SIGKILL)
		return nil
	}
	t.Event("bridge exited with %d; %d published", code, pub.Sent())
	t.Check("exit code non-zero", code != 0, "exit code %d", code)
	fatal := c.Grep("ResourceNotFoundException")
	t.Check("clear fatal error logged", len(fatal) > 0, "%d log lines mention ResourceNotFoundException; first: %s", len(fatal), first(fatal))
	back, err := r.DrainChannel(ctx, time.Minute)
	if err != nil {
		return err
	}
	if err := WaitFor(ctx, 30*time.Second, "dead letters read", func() bool { return r.NSQ.Pending(r.DLTopic, dlChannel) == 0 }); err != nil {
		return err
	}
	obs := Observed{Stream: TapStream(r.Tap.Accepted()), DeadLetters: r.DL.All(), BackInNSQ: back, HaveBackInNSQ: true}
	a := r.Account(obs)
	t.Note("%d messages were back in NSQ after the exit (requeued, not FINished), %d of them also in the stream (written, FIN not sent: at-least-once); %d in the stream before the deletion",
		a.BackInNSQ, a.BackAlsoInStream, a.Delivered)
	t.Judge(a, Expect{BackInNSQ: true})
	t.checkNoRace(c)
	return nil
}

// seedOf derives a generator seed from a case's folder name.
func seedOf(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(filepath.Base(s)))
	return h.Sum64()
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	if len(s[0]) > 300 {
		return s[0][:300] + "..."
	}
	return s[0]
}
