package bridge

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/localtest"
	"github.com/nsqk/nsqk/shared/local/nsqlocal"
	"github.com/nsqk/nsqk/shared/location"
	"github.com/nsqk/nsqk/shared/shardmap"
)

// A split and then a merge while messages flow (kinesis-mock): nothing lost or duplicated, the
// bridge follows each new shard map, and every key's records are in order reading parents before
// children.
func TestReshardSplitAndMergeMidRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	km := localtest.Kinesis(t, kinesislocal.Options{Kind: kinesislocal.KinesisMock})
	n := localtest.NSQD(t, nsqlocal.Options{DiskOnly: true})
	h := &harness{t: t, nsqd: n, kc: km.Client(), stream: "reshard", topic: "locations", reg: prometheus.NewRegistry()}
	if err := kinesislocal.CreateStream(ctx, h.kc, h.stream, 2); err != nil {
		t.Fatal(err)
	}
	o := h.options()
	o.ShardRefresh = time.Hour // only a misrouted record can reveal the reshard
	o.ReshardSettle = 200 * time.Millisecond
	r := h.start(o)

	gen := location.NewGenerator(200, 3)
	total := 0
	pub := func(k int) {
		bodies := make([][]byte, k)
		for i := range bodies {
			bodies[i], _, _ = gen.Next(nil)
		}
		h.publish(h.topic, bodies)
		total += k
		waitFor(t, 60*time.Second, fmt.Sprintf("%d acknowledged", total), func() bool {
			return testutil.ToFloat64(r.b.m.messagesAcked) == float64(total)
		})
	}
	pub(500)
	m := h.shardMap()
	first := m.Shards()[0]
	mid := midpoint(first.Start, first.End)
	if _, err := h.kc.SplitShard(ctx, &kinesis.SplitShardInput{StreamName: aws.String(h.stream),
		ShardToSplit: aws.String(first.ID), NewStartingHashKey: aws.String(mid.String())}); err != nil {
		t.Fatal(err)
	}
	if err := kinesislocal.WaitActive(ctx, h.kc, h.stream); err != nil {
		t.Fatal(err)
	}
	pub(500)
	waitFor(t, 30*time.Second, "the split map installed", func() bool { return testutil.ToFloat64(r.b.m.reshards) == 1 })
	pub(300)
	// Merge the two children back.
	m = h.shardMap()
	if m.Len() != 3 {
		t.Fatalf("%d open shards after the split", m.Len())
	}
	a, b := m.Shards()[0], m.Shards()[1]
	if _, err := h.kc.MergeShards(ctx, &kinesis.MergeShardsInput{StreamName: aws.String(h.stream),
		ShardToMerge: aws.String(a.ID), AdjacentShardToMerge: aws.String(b.ID)}); err != nil {
		t.Fatal(err)
	}
	if err := kinesislocal.WaitActive(ctx, h.kc, h.stream); err != nil {
		t.Fatal(err)
	}
	pub(500)
	waitFor(t, 30*time.Second, "the merged map installed", func() bool { return testutil.ToFloat64(r.b.m.reshards) == 2 })
	pub(200)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if testutil.ToFloat64(r.b.m.misrouted) == 0 {
		t.Fatal("no misrouted record: the reshard was not discovered the way this test means to exercise")
	}
	// Read parents before children (a shard's records before its children's) and check order.
	recs := readLineage(t, h)
	oc := newOrderCheck()
	for _, u := range recs {
		msg, err := location.Parse(u.data)
		if err != nil {
			t.Fatal(err)
		}
		oc.add(t, msg.UserID, msg.Seq)
	}
	if len(recs) != total || oc.dups != 0 {
		t.Fatalf("%d records (%d duplicates) for %d messages", len(recs), oc.dups, total)
	}
}

func midpoint(a, b shardmap.Hash) shardmap.Hash {
	var out shardmap.Hash
	carry := 0
	for i := 15; i >= 0; i-- { // (a+b)/2 on 128 bits, big-endian
		s := int(a[i]) + int(b[i]) + carry
		out[i], carry = byte(s), s>>8
	}
	for i := 0; i < 16; i++ { // shift right by one, bringing the carry in
		next := out[i] & 1
		out[i] = out[i]>>1 | byte(carry<<7)
		carry = int(next)
	}
	return out
}

// readLineage reads shards in an order where every parent comes before its children.
func readLineage(t *testing.T, h *harness) []userRecord {
	t.Helper()
	out, err := h.kc.ListShards(context.Background(), &kinesis.ListShardsInput{StreamName: aws.String(h.stream)})
	if err != nil {
		t.Fatal(err)
	}
	done := map[string]bool{}
	var order []types.Shard
	for len(order) < len(out.Shards) {
		progress := false
		for _, s := range out.Shards {
			id := aws.ToString(s.ShardId)
			p, ap := aws.ToString(s.ParentShardId), aws.ToString(s.AdjacentParentShardId)
			if !done[id] && (p == "" || done[p]) && (ap == "" || done[ap]) {
				done[id] = true
				order = append(order, s)
				progress = true
			}
		}
		if !progress {
			t.Fatal("shard lineage has a cycle or a missing parent")
		}
	}
	all := h.readStream() // in ListShards order; regroup by the lineage order
	byShard := map[string][]userRecord{}
	for _, u := range all {
		byShard[u.shard] = append(byShard[u.shard], u)
	}
	var recs []userRecord
	for _, s := range order {
		recs = append(recs, byShard[aws.ToString(s.ShardId)]...)
	}
	return recs
}
