package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/nsqio/go-nsq"

	"github.com/nsqk/nsqk/shared/bridge"
	"github.com/nsqk/nsqk/shared/local/kinesisfault"
	"github.com/nsqk/nsqk/shared/redrive"
)

func redriveCases() []Case {
	return []Case{
		{
			Name: "bridge-sigkill-redrive", Group: "process",
			Summary: "as bridge-sigkill, with the answers to the bridge's last PutRecords lost before the SIGKILL (written, never FINished: " +
				"their redeliveries are dead-lettered as late although they are in the stream), restarted, drained; then " +
				"`nsqk redrive --reason late_redelivery --skip-present` on the dead-letter topic while the restarted bridge runs",
			Rule: "after the redrive every published message is in the stream (lost=0, none only dead-lettered); the redrive added no " +
				"duplicate (duplicates in the stream after = before); nothing with reason late_redelivery left in the dead-letter topic; " +
				"every late dead letter redriven or found in the stream; reorders <= the messages redriven (they arrive after newer ones of their key)",
			Run: bridgeSIGKILLRedrive,
		},
	}
}

func bridgeSIGKILLRedrive(ctx context.Context, t *T) error {
	r, err := t.NewRig(ctx, RigOptions{Shards: 2, MsgTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	// The channel redrive reads exists before the first dead letter, as the operator creates it
	// when deploying the bridge: a channel only gets the messages published after it exists.
	r.NSQ.D().GetTopic(r.DLTopic).GetChannel(redrive.DefaultChannel)
	args := []string{"--msg-timeout", "5s", "--late-redelivery", "dead-letter"}
	c1, err := r.StartChild(ctx, "bridge-1", args...)
	if err != nil {
		return err
	}
	pub, err := r.NewPublisher(100, 31)
	if err != nil {
		return err
	}
	total := t.Dur(20*time.Second, 8*time.Second)
	done := pub.Go(ctx, 300, total)
	if err := hold(ctx, total*35/100); err != nil {
		return err
	}
	// Writes go through but their answers are lost: the bridge holds the messages (retrying)
	// without FINishing them, as when a crash comes between PutRecords and FIN.
	r.Front.Set(kinesisfault.Faults{ResetAfterRate: 1})
	if err := WaitFor(ctx, 30*time.Second, "PutRecords answers lost", func() bool { return r.Front.Stats().ResetsAfter >= 3 }); err != nil {
		return err
	}
	before, _ := r.NSQ.Channel(r.Topic, r.Channel)
	c1.Signal(syscall.SIGKILL)
	code1, err := c1.Wait(time.Minute)
	if err != nil {
		return err
	}
	r.Front.Set(kinesisfault.Faults{})
	t.Event("SIGKILL to bridge-1 after %d PutRecords answers were lost (nsqd: %d in flight just before); exit code %d",
		r.Front.Stats().ResetsAfter, before.InFlightCount, code1)
	c2, err := r.StartChild(ctx, "bridge-2", args...)
	if err != nil {
		return err
	}
	if err := <-done; err != nil {
		return err
	}
	if err := r.WaitDrained(ctx, 2*time.Minute); err != nil {
		return err
	}
	obs, _, err := r.Observe(ctx)
	if err != nil {
		return err
	}
	pre := r.Ledger.Account(obs)
	nLate, _ := noteLate(t, obs.DeadLetters)
	t.Event("before the redrive: %d late_redelivery dead letters, %d of them also in the stream, %d only dead-lettered; %d duplicates in the stream",
		nLate, pre.GoodDLAlsoInStream, pre.GoodDLOnly, pre.Duplicated)
	t.Check("the kill left late dead letters both in the stream and not", pre.GoodDLAlsoInStream > 0 && pre.GoodDLOnly > 0,
		"%d also in the stream, %d only dead-lettered (both are needed to exercise --skip-present)", pre.GoodDLAlsoInStream, pre.GoodDLOnly)

	// What `nsqk redrive --nsqd-tcp-address A --topic locations_dead --reason late_redelivery
	// --skip-present --stream S` runs.
	start := time.Now()
	sum, err := redrive.Run(ctx, redrive.Options{NSQDTCPAddress: r.NSQ.TCPAddr(), Topic: r.DLTopic, Reasons: []string{string(bridge.ReasonLate)},
		SkipPresent: true, Stream: r.Stream, Kinesis: r.KC, Idle: 2 * time.Second, Warn: func(s string) { t.Logf("redrive: %s", s) }})
	if err != nil {
		return fmt.Errorf("redrive: %w", err)
	}
	late := sum.ByReason[string(bridge.ReasonLate)]
	if late == nil {
		late = &redrive.Counts{}
	}
	t.Event("redrive took %.1fs: %d redriven, %d already in the stream, %d kept, %d duplicate envelopes",
		time.Since(start).Seconds(), late.Redriven, late.Present, late.Kept, late.Duplicate)
	t.Metric("redrive", map[string]int{"redriven": late.Redriven, "already_in_stream": late.Present, "kept": late.Kept, "duplicate_envelopes": late.Duplicate})
	t.Check("every late dead letter redriven or found in the stream", late.Redriven+late.Present+late.Duplicate == nLate && late.Kept == 0,
		"%d late dead letters; redriven %d, already in the stream %d, duplicate envelopes %d, kept %d", nLate, late.Redriven, late.Present, late.Duplicate, late.Kept)
	t.Check("redrive found in the stream exactly the late dead letters that were there", late.Present == pre.GoodDLAlsoInStream && late.Redriven == pre.GoodDLOnly,
		"outside view: %d in the stream, %d only dead-lettered; redrive: %d already in the stream, %d redriven", pre.GoodDLAlsoInStream, pre.GoodDLOnly, late.Present, late.Redriven)

	// bridge-2 writes the redriven messages.
	end, err := r.EndChild(ctx, c2, 2*time.Minute)
	if err != nil {
		return err
	}
	a := end.A
	st, _ := r.NSQ.Channel(r.Topic, r.Channel)
	redelivered := int(st.TimeoutCount + st.RequeueCount)
	t.Check("every published message is in the stream", a.Delivered == a.Good && a.GoodDLOnly == 0,
		"%d of %d good messages in the stream; %d only dead-lettered", a.Delivered, a.Good, a.GoodDLOnly)
	t.Check("the redrive added no duplicate", a.Duplicated == pre.Duplicated, "duplicates in the stream: %d before the redrive, %d after", pre.Duplicated, a.Duplicated)
	left, err := drainDeadLetters(ctx, r)
	if err != nil {
		return err
	}
	t.Check("nothing with reason late_redelivery left in the dead-letter topic", left[string(bridge.ReasonLate)] == 0,
		"left on channel %s: %v", redrive.DefaultChannel, left)
	t.Judge(a, Expect{MaxDup: -1, DupWhy: fmt.Sprintf("PutRecords retried after lost answers, and messages nsqd redelivered after the kill (%d)", redelivered),
		GoodDL:     []bridge.Reason{bridge.ReasonLate},
		MaxReorder: late.Redriven, ReorderWhy: "redriven messages arrive after newer ones of their key"})
	t.checkNoRace(c1, c2)
	return nil
}

// drainDeadLetters reads what is left on the redrive channel of the dead-letter topic, by reason.
func drainDeadLetters(ctx context.Context, r *Rig) (map[string]int, error) {
	var mu sync.Mutex
	left := map[string]int{}
	seen := map[nsq.MessageID]bool{}
	c, err := nsq.NewConsumer(r.DLTopic, redrive.DefaultChannel, nsq.NewConfig())
	if err != nil {
		return nil, err
	}
	c.SetLogger(nil, nsq.LogLevelError)
	c.AddHandler(nsq.HandlerFunc(func(m *nsq.Message) error {
		var e bridge.Envelope
		json.Unmarshal(m.Body, &e)
		mu.Lock()
		defer mu.Unlock()
		if !seen[m.ID] {
			seen[m.ID] = true
			left[string(e.Reason)]++
		}
		return nil
	}))
	if err := c.ConnectToNSQD(r.NSQ.TCPAddr()); err != nil {
		return nil, err
	}
	err = WaitFor(ctx, 30*time.Second, "the redrive channel drained", func() bool { return r.NSQ.Pending(r.DLTopic, redrive.DefaultChannel) == 0 })
	c.Stop()
	<-c.StopChan
	mu.Lock()
	defer mu.Unlock()
	return left, err
}
