package chaos

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/nsqio/go-nsq"

	"github.com/nsqk/nsqk/shared/bridge"
	"github.com/nsqk/nsqk/shared/local/nsqlocal"
	"github.com/nsqk/nsqk/shared/location"
)

func routesCases() []Case {
	return []Case{
		{
			Name: "partition-sigkill", Group: "process",
			Summary: "two bridge programs (--nsqd-partition 0/2 and 1/2) over two nsqd nodes behind nsqlookupd, one node each; " +
				"SIGKILL to one mid-run (nsqd msg timeout 5 s), restarted at once",
			Rule: "lost=0, reordered=0; duplicated <= what the killed group's node redelivered, and none of the other node's messages; " +
				"good messages dead-lettered only as late_redelivery; the other program keeps running and writing; each node read by one group; final SIGTERMs exit 0",
			Run: partitionSIGKILL,
		},
	}
}

func partitionSIGKILL(ctx context.Context, t *T) error {
	const msgTimeout = 5 * time.Second
	r, err := t.NewRig(ctx, RigOptions{Shards: 2, Lookupd: true, MsgTimeout: msgTimeout})
	if err != nil {
		return err
	}
	// A second node whose owner is the other group (ports are random: start until one is).
	two := bridge.Partition{Count: 2}
	ownerA := two.Owner(r.NSQ.TCPAddr())
	var nodeB *nsqlocal.NSQD
	for i := 0; nodeB == nil; i++ {
		if i == 64 {
			return fmt.Errorf("no nsqd on a free port hashed to group %d", 1-ownerA)
		}
		n, err := nsqlocal.Start(nsqlocal.Options{MsgTimeout: msgTimeout, LookupdTCPAddresses: []string{r.Lookupd.TCPAddr}, Logger: t.Logger()})
		if err != nil {
			return err
		}
		t.Cleanup(n.Stop)
		if two.Owner(n.TCPAddr) != ownerA {
			nodeB = n
		}
	}
	nodeB.GetTopic(r.Topic).GetChannel(r.Channel)
	nodeB.GetTopic(r.DLTopic).GetChannel(dlChannel)
	if err := WaitFor(ctx, 30*time.Second, "both nodes registered with nsqlookupd", func() bool {
		return len(r.Lookupd.DB.FindProducers("topic", r.Topic, "")) == 2
	}); err != nil {
		return err
	}
	dlB, err := collectDeadLetters(nodeB.TCPAddr, r.DLTopic)
	if err != nil {
		return err
	}
	t.Cleanup(dlB.Stop)
	prodB, err := nsq.NewProducer(nodeB.TCPAddr, nsq.NewConfig())
	if err != nil {
		return err
	}
	prodB.SetLogger(nil, nsq.LogLevelError)
	t.Cleanup(prodB.Stop)
	pubA, err := r.NewPublisher(100, 41)
	if err != nil {
		return err
	}
	pubB := &Publisher{r: r, gen: location.NewGenerator(100, 43), p: prodB, prefix: 'v'} // users v..., node B only

	// Children discover nodes through nsqlookupd; group g reads the nodes its index owns.
	args := func(g int) []string {
		return []string{"--lookupd-http-address", r.Lookupd.HTTPAddr, "--nsqd-partition", fmt.Sprintf("%d/2", g), "--msg-timeout", "5s",
			"--consumer-opt", "lookupd_poll_interval=1s"}
	}
	killedG, otherG := 1-ownerA, ownerA
	t.Event("node A %s is read by group %d, node B %s by group %d", r.NSQ.TCPAddr(), ownerA, nodeB.TCPAddr, killedG)
	other, err := r.StartChild(ctx, fmt.Sprintf("group-%d", otherG), args(otherG)...)
	if err != nil {
		return err
	}
	victim, err := r.StartChild(ctx, fmt.Sprintf("group-%d", killedG), args(killedG)...)
	if err != nil {
		return err
	}

	total := t.Dur(16*time.Second, 8*time.Second)
	pctx, stop := context.WithTimeout(ctx, total)
	defer stop()
	done := make(chan error, 1)
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-pctx.Done():
				done <- nil
				return
			case <-tick.C:
			}
			for _, p := range []*Publisher{pubA, pubB} {
				if err := p.Publish(15); err != nil { // 300 msg/s per node
					done <- err
					return
				}
			}
		}
	}()
	if err := hold(ctx, total*35/100); err != nil {
		return err
	}
	bStats := func() nsqdChannel { return channelOf(nodeB, r.Topic, r.Channel) }
	before := bStats()
	ackedBefore := otherAcked(ctx, other)
	victim.Signal(syscall.SIGKILL)
	code, err := victim.Wait(time.Minute)
	if err != nil {
		return err
	}
	t.Event("SIGKILL to %s (node B: %d in flight just before); exit code %d", victim.Name, before.InFlight, code)
	t.Metric("in_flight_at_kill", before.InFlight)
	restarted, err := r.StartChild(ctx, victim.Name+"-restarted", args(killedG)...)
	if err != nil {
		return err
	}
	if err := <-done; err != nil {
		return err
	}
	if err := WaitFor(ctx, 2*time.Minute, "both nodes drained", func() bool {
		b := bStats()
		return r.NSQ.Pending(r.Topic, r.Channel) == 0 && b.Depth+b.InFlight+b.Deferred == 0 &&
			r.NSQ.Pending(r.DLTopic, dlChannel) == 0 && channelOf(nodeB, r.DLTopic, dlChannel).Depth == 0
	}); err != nil {
		return err
	}
	ackedAfter := otherAcked(ctx, other)
	exited, _ := other.Exited()
	t.Check("the other group kept running and writing", !exited && ackedAfter > ackedBefore,
		"exited %v; acked %.0f before the kill, %.0f at the end", exited, ackedBefore, ackedAfter)
	a, nB := channelOf(r.NSQ.D(), r.Topic, r.Channel), bStats()
	t.Check("each node read by exactly one group", a.Clients == 1 && nB.Clients == 1, "clients on node A %d, node B %d", a.Clients, nB.Clients)
	t.Check("the other group's node redelivered nothing", a.Timeouts+a.Requeues == 0, "node A: %d timed out, %d requeued", a.Timeouts, a.Requeues)
	for _, c := range []*Child{other, restarted} {
		if _, err := r.SIGTERM(ctx, c); err != nil {
			return err
		}
	}

	recs, _, err := r.ReadStream(ctx)
	if err != nil {
		return err
	}
	obs := Observed{Stream: recs, DeadLetters: append(r.DL.All(), dlB.All()...)}
	acc := r.Account(obs)
	redelivered := int(nB.Timeouts + nB.Requeues)
	t.Event("node B redelivered %d messages (%d timed out, %d requeued)", redelivered, nB.Timeouts, nB.Requeues)
	t.Metric("node_b_redelivered", redelivered)
	noteLate(t, obs.DeadLetters)
	t.Judge(acc, Expect{MaxDup: max(redelivered, 0), DupWhy: "messages the killed group's node redelivered", GoodDL: []bridge.Reason{bridge.ReasonLate}})
	seen, dupA := map[string]int{}, 0
	for _, u := range recs {
		if len(u.Data) > 12 && u.Data[12] == 'u' { // node A's users
			if seen[string(u.Data)]++; seen[string(u.Data)] > 1 {
				dupA++
			}
		}
	}
	t.Check("none of the other node's messages duplicated", dupA == 0, "%d duplicates of node A's messages", dupA)
	if redelivered == 0 {
		t.Check("messages were redelivered", false, "node B redelivered nothing: the kill did not hit messages in flight")
	}
	t.checkNoRace(other, victim, restarted)
	return nil
}

// nsqdChannel is the part of a channel's stats the case reads.
type nsqdChannel struct {
	Depth, InFlight, Deferred, Timeouts, Requeues int64
	Clients                                       int
}

func channelOf(n *nsqlocal.NSQD, topic, channel string) nsqdChannel {
	for _, ts := range n.GetStats(topic, channel, true).Topics {
		for _, c := range ts.Channels {
			if ts.TopicName == topic && c.ChannelName == channel {
				return nsqdChannel{Depth: c.Depth, InFlight: int64(c.InFlightCount), Deferred: int64(c.DeferredCount),
					Timeouts: int64(c.TimeoutCount), Requeues: int64(c.RequeueCount), Clients: len(c.Clients)}
			}
		}
	}
	return nsqdChannel{}
}

func otherAcked(ctx context.Context, c *Child) float64 {
	f, err := c.Scrape(ctx)
	if err != nil {
		return -1
	}
	return f.Value("nsqk_bridge_messages_acked_total")
}
