package bridge

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nsqk/nsqk/shared/local/kinesisfault"
	"github.com/nsqk/nsqk/shared/local/localtest"
	"github.com/nsqk/nsqk/shared/local/nsqlocal"
)

// Through nsqlookupd: discovery, consumption, and dead-lettering to the nsqd the message came from.
func TestLookupdDiscovery(t *testing.T) {
	lk := localtest.Lookupd(t)
	h := newHarness(t, 1)
	// Replace the harness nsqd with one registered with lookupd.
	h.nsqd.Stop()
	n := localtest.NSQD(t, nsqlocal.Options{LookupdTCPAddresses: []string{lk.TCPAddr}, DiskOnly: true})
	h.nsqd = n
	o := h.options()
	o.NSQDTCPAddresses, o.NSQDHTTPAddresses = nil, nil
	o.LookupdHTTPAddresses = []string{lk.HTTPAddr}
	dead := h.collect(o.Topic + "_dead")
	publishLocations(h, 200, 5)
	h.publish(o.Topic, [][]byte{[]byte(`{"no":"key"}`)})
	waitFor(t, 30*time.Second, "lookupd registration", func() bool {
		return len(lk.DB.FindProducers("topic", o.Topic, "")) > 0
	})
	r := h.start(o)
	waitFor(t, 60*time.Second, "all messages handled", func() bool {
		return testutil.ToFloat64(r.b.m.messagesAcked) == 200 && len(dead.all()) == 1
	})
	waitFor(t, 10*time.Second, "backlog gauge from lookupd + nsqd stats", func() bool {
		return testutil.ToFloat64(r.b.m.backlog) == 0 && r.b.Ready()
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	checkStream(t, h, 200)
}

// Kinesis slower than half the NSQ message timeout: TOUCH keeps the messages alive, so nsqd does
// not redeliver them (no duplicates, attempts stay 1).
func TestTouchKeepsSlowMessagesAlive(t *testing.T) {
	h := newHarness(t, 1)
	front := h.faultFront()
	front.Set(kinesisfault.Faults{Delay: 3 * time.Second})
	o := h.options()
	o.MsgTimeout = 2 * time.Second
	publishLocations(h, 100, 10)
	r := h.start(o)
	waitFor(t, 60*time.Second, "acknowledged", func() bool { return testutil.ToFloat64(r.b.m.messagesAcked) == 100 })
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if testutil.ToFloat64(r.b.m.touches) == 0 {
		t.Fatal("no TOUCH sent while Kinesis took longer than half the message timeout")
	}
	if in := testutil.ToFloat64(r.b.m.messagesIn); in != 100 {
		t.Fatalf("%v deliveries of 100 messages: nsqd timed some out and redelivered them", in)
	}
	if oc := checkStream(t, h, 100); oc.dups != 0 {
		t.Fatalf("%d duplicates", oc.dups)
	}
}

// The stream is deleted under the bridge: a clear fatal error, and every message not written is
// requeued in NSQ, never FINished.
func TestStreamDeletedIsFatalAndNothingUnwrittenIsFinished(t *testing.T) {
	h := newHarness(t, 1)
	o := h.options()
	o.MaxBufferedTime = time.Hour // nothing is written before the deletion
	publishLocations(h, 300, 10)
	r := h.start(o)
	waitFor(t, 30*time.Second, "all messages received", func() bool { return r.b.Held() == 300 })
	if _, err := h.kc.DeleteStream(context.Background(), &kinesis.DeleteStreamInput{StreamName: aws.String(h.stream)}); err != nil {
		t.Fatal(err)
	}
	// Force the held messages out: the shutdown path seals everything.
	var err error
	select {
	case err = <-func() chan error { r.cancel(); return r.done }():
	case <-time.After(60 * time.Second):
		t.Fatal("bridge did not stop")
	}
	r.done <- err
	if !isFatal(errors.Unwrap(err)) && !isFatal(err) {
		t.Fatalf("Run returned %v, want the ResourceNotFound fatal error", err)
	}
	if n := testutil.ToFloat64(r.b.m.messagesAcked); n != 0 {
		t.Fatalf("%v messages FINished although nothing was written", n)
	}
	if got := testutil.ToFloat64(r.b.m.messagesRequeue.WithLabelValues("fatal")); got != 300 {
		t.Fatalf("%v messages requeued, want 300", got)
	}
	waitFor(t, 10*time.Second, "messages back in NSQ", func() bool { return h.nsqd.Depth(o.Topic, o.Channel) == 300 })
}

// nsqd restarts while the bridge is writing: the FINs are lost with the connection, nsqd delivers
// the messages again after the restart, and the bridge recognises them as just written: each is in
// the stream once, and nothing is left in NSQ.
func TestNSQDRestartDuringWriteWritesEachMessageOnce(t *testing.T) {
	h := newHarness(t, 1)
	front := h.faultFront()
	dir := t.TempDir()
	h.nsqd.Stop()
	start := func(tcp, http string) *nsqlocal.NSQD {
		n, err := nsqlocal.Start(nsqlocal.Options{DataPath: dir, TCPAddress: tcp, HTTPAddress: http, DiskOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	n := start("", "")
	h.nsqd = n
	o := h.options()
	front.Set(kinesisfault.Faults{Delay: 2 * time.Second})
	publishLocations(h, 300, 30)
	r := h.start(o)
	waitFor(t, 30*time.Second, "all messages held", func() bool { return r.b.Held() == 300 })
	n.Stop() // persists the 300 in-flight messages
	n = start(n.TCPAddr, n.HTTPAddr)
	defer n.Stop()
	h.nsqd = n
	front.Set(kinesisfault.Faults{})
	waitFor(t, 60*time.Second, "nsqd redelivered the written messages", func() bool {
		return testutil.ToFloat64(r.b.m.redelivered.WithLabelValues("written")) == 300 && r.b.Held() == 0
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if oc := checkStream(t, h, 300); oc.dups != 0 {
		t.Fatalf("%d duplicates", oc.dups)
	}
	if d := n.Depth(o.Topic, o.Channel); d != 0 {
		t.Fatalf("%d messages left in nsqd", d)
	}
}

// Kinesis is slower than nsqd's --max-msg-timeout (which TOUCH cannot extend): nsqd times the held
// messages out and delivers them again on the same connection; the new deliveries take the held
// messages' places, each is written once and FINished.
func TestRedeliveryOfHeldMessagesTakesTheirPlace(t *testing.T) {
	h := newHarness(t, 1)
	front := h.faultFront()
	h.nsqd.Stop()
	n := localtest.NSQD(t, nsqlocal.Options{MaxMsgTimeout: 2 * time.Second, DiskOnly: true})
	h.nsqd = n
	o := h.options()
	o.MsgTimeout = time.Second
	front.Set(kinesisfault.Faults{Delay: 3 * time.Second})
	publishLocations(h, 200, 20)
	r := h.start(o)
	waitFor(t, 30*time.Second, "the held messages delivered again", func() bool {
		return testutil.ToFloat64(r.b.m.redelivered.WithLabelValues("held")) >= 200
	})
	front.Set(kinesisfault.Faults{})
	waitFor(t, 30*time.Second, "acknowledged", func() bool { return r.b.Held() == 0 && n.Depth(o.Topic, o.Channel) == 0 })
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if oc := checkStream(t, h, 200); oc.dups != 0 {
		t.Fatalf("%d duplicates", oc.dups)
	}
}

// Thousands of messages acknowledged at once after Kinesis was slow for longer than go-nsq's write
// timeout (1 s): the FINs go out in batches bigger than the connection's write buffer, which must
// not trip a stale write deadline (the connection would drop and nsqd redeliver everything).
func TestBigFINBurstAfterSlowKinesis(t *testing.T) {
	h := newHarness(t, 1)
	front := h.faultFront()
	o := h.options()
	front.Set(kinesisfault.Faults{Delay: 2 * time.Second})
	publishLocations(h, 2400, 100)
	r := h.start(o)
	waitFor(t, 60*time.Second, "acknowledged", func() bool { return testutil.ToFloat64(r.b.m.messagesAcked) == 2400 })
	waitFor(t, 10*time.Second, "FINs processed by nsqd", func() bool { return h.nsqd.Depth(o.Topic, o.Channel) == 0 })
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	stats := h.nsqd.GetStats(o.Topic, o.Channel, false)
	c := stats.Topics[0].Channels[0]
	if c.RequeueCount != 0 || c.TimeoutCount != 0 {
		t.Fatalf("nsqd requeued %d and timed out %d messages: FINs were lost", c.RequeueCount, c.TimeoutCount)
	}
	if in := testutil.ToFloat64(r.b.m.messagesIn); in != 2400 {
		t.Fatalf("%v deliveries of 2400 messages", in)
	}
	if oc := checkStream(t, h, 2400); oc.dups != 0 {
		t.Fatalf("%d duplicates", oc.dups)
	}
}
