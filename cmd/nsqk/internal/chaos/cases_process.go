package chaos

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/nsqio/go-nsq"

	"github.com/nsqk/nsqk/shared/bridge"
	"github.com/nsqk/nsqk/shared/local/kinesisfault"
)

const ruleRestart = "lost=0, reordered=0; duplicated <= the messages nsqd had in flight to the bridge when it stopped (nsqd's count); " +
	"good messages dead-lettered only as late_redelivery; the bridge reconnects by itself within 10 s of nsqd being back; graceful stop returns nil"

// reconnectLimit is how soon after nsqd is back the bridge must be consuming again.
const reconnectLimit = 10 * time.Second

func processCases() []Case {
	return []Case{
		{
			Name: "nsqd-restart", Group: "process",
			Summary: "nsqd stopped, down 2 s, and started again (same address and data path) mid-run, with messages in flight to an in-process bridge connected to it directly",
			Rule:    ruleRestart,
			Run:     func(ctx context.Context, t *T) error { return nsqdRestart(ctx, t, false) },
		},
		{
			Name: "nsqd-restart-lookupd", Group: "process",
			Summary: "as nsqd-restart, the bridge discovering nsqd through nsqlookupd (--lookupd-http-address)",
			Rule:    ruleRestart,
			Run:     func(ctx context.Context, t *T) error { return nsqdRestart(ctx, t, true) },
		},
		{
			Name: "bridge-sigterm", Group: "process", Quick: true,
			Summary: "SIGTERM to the bridge program mid-run, a new one started after it exited, then SIGTERM again at the end",
			Rule:    "both exits 0; exactly-once: lost=0, duplicated=0, reordered=0, nothing dead-lettered; nsqd timed out or requeued nothing",
			Run:     bridgeSIGTERM,
		},
		{
			Name: "bridge-sigkill", Group: "process", Quick: true,
			Summary: "SIGKILL to the bridge program mid-run (nsqd msg timeout 5 s), restarted at once; default --late-redelivery=dead-letter",
			Rule: "at-least-once: lost=0, reordered=0; duplicated <= messages nsqd redelivered (its timeout+requeue counts); " +
				"good messages dead-lettered only as late_redelivery, each a redelivery (attempts >= 2); final SIGTERM exits 0",
			Run: func(ctx context.Context, t *T) error { return bridgeSIGKILL(ctx, t, "dead-letter") },
		},
		{
			Name: "bridge-sigkill-late-write", Group: "process",
			Summary: "as bridge-sigkill with --late-redelivery=write: redelivered messages older than accepted ones are written",
			Rule: "at-least-once: lost=0; duplicated and reordered each <= messages nsqd redelivered (reorders are what " +
				"--late-redelivery=write trades for not dead-lettering; reported); nothing dead-lettered; final SIGTERM exits 0",
			Run: func(ctx context.Context, t *T) error { return bridgeSIGKILL(ctx, t, "write") },
		},
		{
			Name: "slow-kinesis", Group: "process",
			Summary: "every PutRecords takes 3.5 s with a 4 s NSQ message timeout: messages wait longer than the timeout and must be TOUCHed",
			Rule:    ruleExactlyOnce + "; messages waited longer than the msg timeout; nsqd timed out none (no redelivery)",
			Run:     slowKinesis,
		},
		{
			Name: "max-attempts", Group: "process", Quick: true,
			Summary: "messages already delivered 3 times (a consumer REQs them first) reach a bridge with --max-attempts 3; others at exactly 3 attempts",
			Rule: "every message delivered more than --max-attempts times is dead-lettered as max_attempts (attempts in the envelope > 3), never in the stream; " +
				"messages at exactly 3 attempts and fresh ones are written: exactly-once, in order",
			Run: maxAttempts,
		},
	}
}

// nsqdRestart stops and restarts nsqd under an in-process bridge. The channel is paused just
// before the stop, so that nsqd's in-flight count at that moment bounds the redeliveries.
func nsqdRestart(ctx context.Context, t *T, lookupd bool) error {
	r, err := t.NewRig(ctx, RigOptions{Shards: 2, Lookupd: lookupd})
	if err != nil {
		return err
	}
	b, err := r.StartReady(ctx, r.BridgeOptions())
	if err != nil {
		return err
	}
	total := t.Dur(20*time.Second, 8*time.Second)
	pub, done, err := r.PublishUntil(ctx, 200, 11, 300, total, total/3)
	if err != nil {
		return err
	}
	pub.Pause()
	ch := r.NSQ.D().GetTopic(r.Topic).GetChannel(r.Channel)
	ch.Pause()
	st, _ := r.NSQ.Channel(r.Topic, r.Channel)
	inFlight := st.InFlightCount
	t.Event("stopping nsqd: %d messages in flight to the bridge, %d queued", inFlight, st.Depth)
	r.NSQ.Stop()
	if err := hold(ctx, 2*time.Second); err != nil { // a restart takes a moment
		pub.Resume()
		return err
	}
	if err := r.NSQ.Start(); err != nil {
		pub.Resume()
		return fmt.Errorf("restart nsqd: %w", err)
	}
	restarted := time.Now()
	if c, err := r.NSQ.D().GetTopic(r.Topic).GetExistingChannel(r.Channel); err == nil {
		c.UnPause()
	}
	st, _ = r.NSQ.Channel(r.Topic, r.Channel)
	t.Event("nsqd started again on %s with %d messages queued from disk", r.NSQ.TCPAddr(), st.Depth+st.BackendDepth)
	pub.Resume()
	err = WaitFor(ctx, 2*time.Minute, "the bridge reconnected", func() bool {
		st, ok := r.NSQ.Channel(r.Topic, r.Channel)
		return ok && st.ClientCount > 0
	})
	if err != nil {
		t.Check("the bridge reconnects", false, "%v", err)
	} else {
		gap := time.Since(restarted)
		t.Event("the bridge reconnected %.1fs after nsqd came back", gap.Seconds())
		t.Metric("reconnect_seconds", roundS(gap))
		how := "go-nsq retries a direct nsqd every lookupd_poll_interval, which the bridge sets to 5s"
		if lookupd {
			how = "go-nsq polls lookupd once when the connection drops (nsqd is still down then), then every lookupd_poll_interval (default 60s)"
		}
		t.Check(fmt.Sprintf("the bridge reconnects within %s", reconnectLimit), gap <= reconnectLimit, "after %.1fs (%s)", gap.Seconds(), how)
	}
	if err := <-done; err != nil {
		return err
	}
	end, err := r.EndInProc(ctx, b, 3*time.Minute)
	if err != nil {
		return err
	}
	noteLate(t, end.Obs.DeadLetters)
	t.Judge(end.A, Expect{MaxDup: max(inFlight, 0), DupWhy: "in flight at the stop", GoodDL: []bridge.Reason{bridge.ReasonLate}})
	if inFlight == 0 {
		t.Check("messages were in flight at the stop", false, "0 in flight: the scenario did not exercise a restart under load")
	}
	return nil
}

// noteLate describes the late_redelivery dead letters: how many were first deliveries (attempts
// 1), which NSQ delivered after newer messages of their key without any redelivery.
func noteLate(t *T, envs []DeadLetter) (late, firstDelivery int) {
	for _, e := range envs {
		if e.Reason == bridge.ReasonLate {
			late++
			if e.Attempts < 2 {
				firstDelivery++
			}
		}
	}
	if late > 0 {
		t.Note("%d dead-lettered as late_redelivery, %d of them on their first delivery (attempts 1: NSQ delivered them after newer messages of their key without a redelivery)",
			late, firstDelivery)
	}
	t.Metric("late_dead_letters", map[string]int{"total": late, "first_delivery": firstDelivery})
	return late, firstDelivery
}

func bridgeSIGTERM(ctx context.Context, t *T) error {
	r, err := t.NewRig(ctx, RigOptions{Shards: 2, MsgTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	c1, err := r.StartChild(ctx, "bridge-1", "--msg-timeout", "5s")
	if err != nil {
		return err
	}
	total := t.Dur(12*time.Second, 5*time.Second)
	_, done, err := r.PublishUntil(ctx, 200, 13, 300, total, total/2)
	if err != nil {
		return err
	}
	st, _ := r.NSQ.Channel(r.Topic, r.Channel)
	t.Event("SIGTERM to bridge-1 (%d messages in flight)", st.InFlightCount)
	if _, err := r.SIGTERM(ctx, c1); err != nil {
		return err
	}
	c2, err := r.StartChild(ctx, "bridge-2", "--msg-timeout", "5s")
	if err != nil {
		return err
	}
	if err := <-done; err != nil {
		return err
	}
	end, err := r.EndChild(ctx, c2, 2*time.Minute)
	if err != nil {
		return err
	}
	st, _ = r.NSQ.Channel(r.Topic, r.Channel)
	t.Check("nsqd redelivered nothing", st.TimeoutCount == 0 && st.RequeueCount == 0,
		"nsqd: %d timed out, %d requeued", st.TimeoutCount, st.RequeueCount)
	t.Judge(end.A, Expect{})
	t.Check("nothing dead-lettered", end.A.DeadLetterTotal() == 0, "%v", end.A.DeadLettered)
	t.checkNoRace(c1, c2)
	return nil
}

func tailIf(cond bool, c *Child) string {
	if !cond {
		return "-"
	}
	return c.Tail(8)
}

// bridgeSIGKILL kills the bridge program mid-run and restarts it at once. Messages it held are
// redelivered by nsqd after the message timeout (5 s), behind newer ones.
func bridgeSIGKILL(ctx context.Context, t *T, late string) error {
	r, err := t.NewRig(ctx, RigOptions{Shards: 2, MsgTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	args := []string{"--msg-timeout", "5s", "--late-redelivery", late}
	c1, err := r.StartChild(ctx, "bridge-1", args...)
	if err != nil {
		return err
	}
	total := t.Dur(20*time.Second, 8*time.Second)
	_, done, err := r.PublishUntil(ctx, 100, 17, 300, total, total*35/100)
	if err != nil {
		return err
	}
	before, _ := r.NSQ.Channel(r.Topic, r.Channel)
	c1.Signal(syscall.SIGKILL)
	code1, err := c1.Wait(time.Minute)
	if err != nil {
		return err
	}
	t.Event("SIGKILL to bridge-1 (nsqd: %d in flight just before); exit code %d", before.InFlightCount, code1)
	t.Metric("in_flight_at_kill", before.InFlightCount)
	c2, err := r.StartChild(ctx, "bridge-2", args...)
	if err != nil {
		return err
	}
	if err := <-done; err != nil {
		return err
	}
	end, err := r.EndChild(ctx, c2, 2*time.Minute)
	if err != nil {
		return err
	}
	st, _ := r.NSQ.Channel(r.Topic, r.Channel)
	redelivered := int(st.TimeoutCount + st.RequeueCount)
	t.Event("nsqd redelivered %d messages (%d timed out, %d requeued)", redelivered, st.TimeoutCount, st.RequeueCount)
	t.Metric("nsqd_redelivered", redelivered)
	a := end.A
	nLate, firstDelivery := noteLate(t, end.Obs.DeadLetters)
	why := "messages nsqd redelivered after the kill"
	if late == "dead-letter" {
		t.Judge(a, Expect{MaxDup: max(redelivered, 0), DupWhy: why, GoodDL: []bridge.Reason{bridge.ReasonLate}})
		t.Check("late dead letters were redeliveries", firstDelivery == 0, "%d of %d late_redelivery dead letters had attempts 1", firstDelivery, nLate)
	} else {
		t.Judge(a, Expect{MaxDup: max(redelivered, 0), DupWhy: why, MaxReorder: max(redelivered, 0), ReorderWhy: "--late-redelivery=write"})
		t.Note("%d per-key reorders with --late-redelivery=write (the bridge counted %.0f late redeliveries)", a.Reordered,
			end.MF.Value("nsqk_bridge_late_redeliveries_total"))
	}
	if redelivered == 0 {
		t.Check("messages were redelivered", false, "nsqd redelivered nothing: the kill did not hit messages in flight")
	}
	t.checkNoRace(c1, c2)
	return nil
}

func slowKinesis(ctx context.Context, t *T) error {
	w, err := runWindow(ctx, t, window{shards: 2, users: 100, rate: t.N(100, 100),
		before: 0, fault: t.Dur(12*time.Second, 6*time.Second), after: 0,
		apply: setFaults(kinesisfault.Faults{Delay: 3500 * time.Millisecond}), clear: noFaults,
		options: func(o *bridge.Options) { o.MsgTimeout = 4 * time.Second }})
	if err != nil {
		return err
	}
	st, _ := w.r.NSQ.Channel(w.r.Topic, w.r.Channel)
	t.Check("nsqd timed out nothing", st.TimeoutCount == 0 && st.RequeueCount == 0, "nsqd: %d timed out, %d requeued", st.TimeoutCount, st.RequeueCount)
	obs, _, err := w.r.ReadStream(ctx)
	if err != nil {
		return err
	}
	longest := longestWait(obs)
	t.Check("messages waited longer than the msg timeout", longest > 4*time.Second,
		"longest publish-to-arrival %.1fs (msg timeout 4s); the bridge sent %.0f TOUCHes", longest.Seconds(), w.mf.Value("nsqk_bridge_touches_total"))
	t.Judge(w.a, Expect{})
	return nil
}

// longestWait is the longest time between a location message's ts and its record's arrival.
func longestWait(recs []UserRec) time.Duration {
	var longest time.Duration
	for _, u := range recs {
		var m struct{ TS int64 }
		if jsonUnmarshal(u.Data, &m) != nil || m.TS == 0 || u.Arrival.IsZero() {
			continue
		}
		if d := u.Arrival.Sub(time.UnixMilli(m.TS)); d > longest {
			longest = d
		}
	}
	return longest
}

// maxAttempts brings messages to 3 and 2 delivery attempts with a consumer that REQs them, then
// hands them to a bridge with --max-attempts 3.
func maxAttempts(ctx context.Context, t *T) error {
	r, err := t.NewRig(ctx, RigOptions{Shards: 2})
	if err != nil {
		return err
	}
	over, err := r.NewPublisher(20, 19)
	if err != nil {
		return err
	}
	over.WithPrefix('x') // delivered 4 times by the time the bridge sees them
	at, err := r.NewPublisher(20, 23)
	if err != nil {
		return err
	}
	at.WithPrefix('y') // delivered 3 times: at the limit, written
	var overBodies, atBodies [][]byte
	for range 60 {
		overBodies = append(overBodies, over.Next())
		atBodies = append(atBodies, at.Next())
	}
	if err := over.PublishBodies(overBodies, false); err != nil {
		return err
	}
	r.Ledger.ExpectDeadLetter(bridge.ReasonMaxAttempts, overBodies...)
	if err := at.PublishBodies(atBodies, true); err != nil {
		return err
	}
	// A consumer on the bridge's channel requeues every message until it has been delivered
	// `target` times, then holds it; once all are held it sets RDY 0 and requeues them all, so
	// that the bridge gets each one with attempts = target+1.
	target := map[byte]uint16{'x': 3, 'y': 2}
	held := make(chan *nsq.Message, 200)
	cfg := nsq.NewConfig()
	cfg.MaxInFlight = 200
	pre, err := nsq.NewConsumer(r.Topic, r.Channel, cfg)
	if err != nil {
		return err
	}
	pre.SetLogger(nil, nsq.LogLevelError)
	pre.AddHandler(nsq.HandlerFunc(func(m *nsq.Message) error {
		m.DisableAutoResponse()
		if m.Attempts < target[m.Body[12]] {
			m.RequeueWithoutBackoff(0)
			return nil
		}
		held <- m
		return nil
	}))
	if err := pre.ConnectToNSQD(r.NSQ.TCPAddr()); err != nil {
		return err
	}
	var msgs []*nsq.Message
	deadline := time.After(time.Minute)
	for len(msgs) < 120 {
		select {
		case m := <-held:
			msgs = append(msgs, m)
		case <-deadline:
			return fmt.Errorf("only %d of 120 messages reached their target attempts", len(msgs))
		}
	}
	pre.ChangeMaxInFlight(0)
	if err := WaitFor(ctx, 10*time.Second, "RDY 0", pre.IsStarved); err != nil {
		return err
	}
	for _, m := range msgs {
		m.RequeueWithoutBackoff(0)
	}
	pre.Stop()
	<-pre.StopChan
	if err := WaitFor(ctx, 10*time.Second, "messages back in the channel", func() bool {
		st, _ := r.NSQ.Channel(r.Topic, r.Channel)
		return st.Depth == 120 && st.InFlightCount == 0
	}); err != nil {
		return err
	}
	st, _ := r.NSQ.Channel(r.Topic, r.Channel)
	t.Event("120 messages requeued by a consumer (%d requeues): 60 at 3 attempts, 60 at 2", st.RequeueCount)
	o := r.BridgeOptions()
	o.MaxAttempts = 3
	b, err := r.StartBridge(o)
	if err != nil {
		return err
	}
	fresh, err := r.NewPublisher(50, 29)
	if err != nil {
		return err
	}
	if err := fresh.Publish(t.N(2000, 1000)); err != nil {
		return err
	}
	end, err := r.EndInProc(ctx, b, time.Minute)
	if err != nil {
		return err
	}
	a := end.A
	wrongAttempts := 0
	for _, e := range end.Obs.DeadLetters {
		if e.Reason == bridge.ReasonMaxAttempts && e.Attempts <= 3 {
			wrongAttempts++
		}
	}
	t.Check("max_attempts dead letters carry attempts > 3", a.DeadLettered[string(bridge.ReasonMaxAttempts)] == 60 && wrongAttempts == 0,
		"%d dead-lettered as max_attempts (want 60), %d with attempts <= 3", a.DeadLettered[string(bridge.ReasonMaxAttempts)], wrongAttempts)
	t.Judge(a, Expect{})
	return nil
}

func backlogCases() []Case {
	return []Case{
		{
			Name: "nsq-backlog-spill", Group: "nsq",
			Summary: "15000 messages queued while no bridge runs (nsqd's default --mem-queue-size 10000: the channel spills to disk), then the bridge drains them",
			Rule: "no loss, no duplicates; reorders only among the messages nsqd spilled to disk: nsqd interleaves its memory and disk " +
				"queues once a channel is deeper than --mem-queue-size and delivers those out of publish order, which no consumer can undo " +
				"(the bridge writes them as they come and counts them as out_of_order_deliveries_total). Run nsqd with --mem-queue-size=0 " +
				"for ordered topics (nsq-backlog-disk-only)",
			Run: func(ctx context.Context, t *T) error { return backlog(ctx, t, false) },
		},
		{
			Name: "nsq-backlog-disk-only", Group: "nsq",
			Summary: "as nsq-backlog-spill with nsqd --mem-queue-size=0 (every message through the FIFO disk queue)",
			Rule:    ruleExactlyOnce,
			Run:     func(ctx context.Context, t *T) error { return backlog(ctx, t, true) },
		},
	}
}

func backlog(ctx context.Context, t *T, diskOnly bool) error {
	r, err := t.NewRig(ctx, RigOptions{Shards: 2, DiskOnly: diskOnly})
	if err != nil {
		return err
	}
	pub, err := r.NewPublisher(200, 53)
	if err != nil {
		return err
	}
	if err := pub.Publish(15000); err != nil {
		return err
	}
	st, _ := r.NSQ.Channel(r.Topic, r.Channel)
	spilled := int(st.BackendDepth)
	t.Event("15000 published with no bridge running: %d in nsqd's memory queue, %d on disk", st.Depth-st.BackendDepth, spilled)
	b, err := r.StartBridge(r.BridgeOptions())
	if err != nil {
		return err
	}
	end, err := r.EndInProc(ctx, b, 3*time.Minute)
	if err != nil {
		return err
	}
	a, mf := end.A, end.MF
	e := Expect{}
	if !diskOnly {
		e.MaxReorder, e.ReorderWhy = spilled, "nsqd spilled these to disk and interleaves them with its memory queue"
		t.Note("reordered %d; the bridge counted %v first deliveries older than one it had accepted", a.Reordered,
			mf.Value("nsqk_bridge_out_of_order_deliveries_total"))
	}
	t.Judge(a, e)
	return nil
}
