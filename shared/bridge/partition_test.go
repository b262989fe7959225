package bridge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nsqk/nsqk/shared/local/emfread"
	"github.com/nsqk/nsqk/shared/local/localtest"
	"github.com/nsqk/nsqk/shared/local/nsqlocal"
)

func TestParsePartition(t *testing.T) {
	if p, err := ParsePartition("1/3"); err != nil || p != (Partition{1, 3}) || p.String() != "1/3" {
		t.Fatalf("1/3: %v %v", p, err)
	}
	for _, s := range []string{"", "1", "3/3", "-1/2", "0/0", "a/b", "1/2/3"} {
		if _, err := ParsePartition(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
	o := NewOptions()
	o.Topic, o.Stream, o.NSQDTCPAddresses = "t", "s", []string{"127.0.0.1:4150"}
	o.NSQDPartition = Partition{0, 2}
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "--nsqd-partition needs --lookupd-http-address") {
		t.Fatalf("partition without lookupd: %v", err)
	}
}

// A node's owner is a function of its address and N alone, every index owns some of many
// nodes, and going from N to N+1 bridges moves nodes only to the new index.
func TestPartitionOwnerIsRendezvous(t *testing.T) {
	const nodes = 3000
	for n := 1; n <= 5; n++ {
		p, next := Partition{Count: n}, Partition{Count: n + 1}
		counts := make([]int, n)
		for i := range nodes {
			a := fmt.Sprintf("10.0.%d.%d:4150", i/250, i%250)
			o := p.Owner(a)
			counts[o]++
			if o2 := next.Owner(a); o2 != o && o2 != n {
				t.Fatalf("%s moves from %d to %d when a bridge is added (only moves to %d allowed)", a, o, o2, n)
			}
		}
		for i, c := range counts {
			if c < nodes/n*8/10 || c > nodes/n*12/10 {
				t.Fatalf("N=%d: index %d owns %d of %d nodes", n, i, c, nodes)
			}
		}
	}
}

type nodeMsg struct {
	UserID string `json:"user_id"`
	Node   string `json:"node"`
	Seq    int    `json:"seq"`
}

// Four nsqd nodes behind nsqlookupd, two partitioned bridges each into its own stream: every
// node is read by exactly its owner, nothing is lost or written twice, each key keeps its order
// per node; a node added mid-run is picked up by its owner, and a node removed mid-run is let go.
func TestPartitionedBridgesSplitNodes(t *testing.T) {
	const topic = "locs"
	kc := kinesalite(t).Client()
	l := localtest.Lookupd(t)
	part := func(i int) Partition { return Partition{i, 2} }
	startNode := func() *nsqlocal.NSQD {
		return localtest.NSQD(t, nsqlocal.Options{DiskOnly: true, MsgTimeout: 10 * time.Second, LookupdTCPAddresses: []string{l.TCPAddr}})
	}
	// Ports are random: start nodes until each bridge owns two (the others stay idle: they never
	// have the topic, so nsqlookupd does not list them).
	var nodes []*nsqlocal.NSQD
	owned := [2]int{}
	for len(nodes) < 4 {
		n := startNode()
		if o := part(0).Owner(n.TCPAddr); owned[o] < 2 {
			owned[o]++
			nodes = append(nodes, n)
		}
	}
	name := map[string]string{} // TCP address -> node name
	for i, n := range nodes {
		name[n.TCPAddr] = fmt.Sprintf("n%d", i)
	}
	published := map[string]int{} // node name -> messages published
	publish := func(n *nsqlocal.NSQD, count int) {
		t.Helper()
		p, err := nsq.NewProducer(n.TCPAddr, nsq.NewConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer p.Stop()
		p.SetLogger(nil, nsq.LogLevelError)
		var bodies [][]byte
		for range count {
			nm := name[n.TCPAddr]
			b, _ := json.Marshal(nodeMsg{UserID: fmt.Sprintf("u%d", published[nm]%5), Node: nm, Seq: published[nm]})
			published[nm]++
			bodies = append(bodies, b)
		}
		if err := p.MultiPublish(topic, bodies); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		publish(n, 150)
	}

	type bridgeRun struct {
		h   *harness
		reg *prometheus.Registry
		r   *running
	}
	var bridges [2]bridgeRun
	for i := range bridges {
		h := &harness{t: t, kc: kc, topic: topic, stream: localtest.Stream(t, kc, 2), reg: prometheus.NewRegistry()}
		o := NewOptions()
		o.LookupdHTTPAddresses = []string{l.HTTPAddr}
		o.NSQDPartition = part(i)
		o.Topic, o.Stream = topic, h.stream
		o.MaxBufferedTime = 20 * time.Millisecond
		o.ConsumerOpts = []string{"lookupd_poll_interval=200ms"}
		bridges[i] = bridgeRun{h: h, reg: h.reg, r: h.start(o)}
	}
	acked := func() float64 {
		var sum float64
		for _, b := range bridges {
			sum += counterValue(t, b.reg, "nsqk_bridge_messages_acked_total")
		}
		return sum
	}
	total := func() int {
		s := 0
		for _, c := range published {
			s += c
		}
		return s
	}
	waitFor(t, 60*time.Second, "the first messages acknowledged", func() bool { return acked() == float64(total()) })

	// Remove one node (drained), add one, and publish more to the nodes now up.
	gone := nodes[3]
	gone.Stop()
	added := startNode()
	name[added.TCPAddr] = "n4"
	live := []*nsqlocal.NSQD{nodes[0], nodes[1], nodes[2], added}
	for _, n := range live {
		publish(n, 100)
	}
	waitFor(t, 60*time.Second, "every message acknowledged", func() bool { return acked() == float64(total()) })

	// Each live node's channel has exactly one client: its owner.
	for _, n := range live {
		st := n.GetStats(topic, "nsqk", true).Topics
		if len(st) != 1 || len(st[0].Channels) != 1 || len(st[0].Channels[0].Clients) != 1 {
			t.Fatalf("node %s: channel clients %+v", name[n.TCPAddr], st)
		}
	}
	owner := map[string]int{}
	for a, nm := range name {
		owner[nm] = part(0).Owner(a)
	}
	for _, b := range bridges {
		b.r.stop(t)
	}
	count := map[string]int{} // node/seq -> times written
	for i, b := range bridges {
		last := map[string]int{} // node/key -> seq, in stream order per shard
		for _, u := range b.h.readStream() {
			var m nodeMsg
			if err := json.Unmarshal(u.data, &m); err != nil {
				t.Fatal(err)
			}
			if owner[m.Node] != i {
				t.Fatalf("a message of node %s (owner %d) in bridge %d's stream", m.Node, owner[m.Node], i)
			}
			count[fmt.Sprintf("%s/%d", m.Node, m.Seq)]++
			k := m.Node + "/" + m.UserID
			if s, ok := last[k]; ok && m.Seq < s {
				t.Fatalf("%s: seq %d after %d", k, m.Seq, s)
			}
			last[k] = m.Seq
		}
	}
	for nm, c := range published {
		for s := range c {
			if n := count[fmt.Sprintf("%s/%d", nm, s)]; n != 1 {
				t.Fatalf("%s seq %d written %d times", nm, s, n)
			}
		}
	}
	if len(count) != total() {
		t.Fatalf("%d distinct messages in the streams, %d published", len(count), total())
	}
}

// counterValue sums a counter family's series in reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}

// A partitioned bridge's backlog gauge is the depth of the nodes it owns, not of every node
// nsqlookupd lists.
func TestPartitionedBacklogCountsOwnedNodes(t *testing.T) {
	const topic = "backlog"
	kc := kinesalite(t).Client()
	l := localtest.Lookupd(t)
	var nodes []*nsqlocal.NSQD
	owned := [2]int{}
	for owned[0] == 0 || owned[1] == 0 {
		n := localtest.NSQD(t, nsqlocal.Options{LookupdTCPAddresses: []string{l.TCPAddr}})
		owned[Partition{0, 2}.Owner(n.TCPAddr)]++
		nodes = append(nodes, n)
	}
	depth := [2]int{}
	for i, n := range nodes {
		// Paused: the bridge connects but receives nothing, so the depth stays what was published.
		n.GetTopic(topic).GetChannel("nsqk").Pause()
		p, err := nsq.NewProducer(n.TCPAddr, nsq.NewConfig())
		if err != nil {
			t.Fatal(err)
		}
		p.SetLogger(nil, nsq.LogLevelError)
		for j := range 10 + i {
			if err := p.Publish(topic, []byte(fmt.Sprintf(`{"user_id":"u%d"}`, j))); err != nil {
				t.Fatal(err)
			}
		}
		p.Stop()
		depth[Partition{0, 2}.Owner(n.TCPAddr)] += 10 + i
	}
	for i := range 2 {
		h := &harness{t: t, kc: kc, topic: topic, stream: localtest.Stream(t, kc, 1), reg: prometheus.NewRegistry()}
		o := NewOptions()
		o.LookupdHTTPAddresses = []string{l.HTTPAddr}
		o.NSQDPartition = Partition{i, 2}
		o.Topic, o.Stream = topic, h.stream
		o.BacklogInterval = 50 * time.Millisecond
		out := &syncBuffer{}
		o.EMFOutput, o.EMFInterval = out, 100*time.Millisecond
		h.start(o)
		waitFor(t, 30*time.Second, fmt.Sprintf("bridge %d/2's backlog gauge at %d", i, depth[i]), func() bool {
			return gaugeValue(t, h.reg, "nsqk_bridge_nsq_backlog_messages") == float64(depth[i])
		})
		if got := gaugeValue(t, h.reg, "nsqk_bridge_owned_nodes"); got != float64(owned[i]) {
			t.Errorf("bridge %d/2 owns %v nodes, want %d", i, got, owned[i])
		}
		// The group's own series (with Partition) and the route's (without) carry the owned nodes.
		want := `"Dimensions":[["Stream","Partition"],["Stream"]]`
		val := fmt.Sprintf(`"Partition":"%d/2"`, i)
		waitFor(t, 10*time.Second, fmt.Sprintf("EMF with %s, %s and OwnedNodes %d", want, val, owned[i]), func() bool {
			for _, line := range strings.Split(out.String(), "\n") {
				if !strings.Contains(line, want) || !strings.Contains(line, val) {
					continue
				}
				d, err := emfread.Decode([]byte(line))
				if err != nil {
					t.Fatalf("%v: %s", err, line)
				}
				if v, ok := d.Metrics["OwnedNodes"]; ok && v.Number != nil && *v.Number == float64(owned[i]) {
					return true
				}
			}
			return false
		})
	}
}

// Without a partition the EMF dimension sets stay as they were: Stream, and Route with routes.
func TestEMFDimensionsWithoutPartition(t *testing.T) {
	for _, route := range []string{"", "orders"} {
		var buf bytes.Buffer
		o := NewOptions()
		o.Stream, o.Route, o.EMFOutput = "arn:aws:kinesis:eu-west-1:123456789012:stream/s", route, &buf
		m := newMetrics(nil, newCloudWatch(&o))
		m.owned(2)
		if err := m.cw.reg.Flush(); err != nil {
			t.Fatal(err)
		}
		want := `"Dimensions":[["Stream"]]`
		if route != "" {
			want = `"Dimensions":[["Stream","Route"]]`
		}
		if s := buf.String(); !strings.Contains(s, want) || strings.Contains(s, "Partition") || !strings.Contains(s, `"OwnedNodes":2`) {
			t.Errorf("route %q: %s", route, s)
		}
	}
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}
