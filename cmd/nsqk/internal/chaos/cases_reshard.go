package chaos

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/nsqk/nsqk/shared/bridge"
	"github.com/nsqk/nsqk/shared/consumer"
	"github.com/nsqk/nsqk/shared/local/esm"
	"github.com/nsqk/nsqk/shared/local/kinesisfault"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/location"
	"github.com/nsqk/nsqk/shared/shardmap"
)

const ruleReshard = "exactly-once and in per-key order as the consumer saw it: a local ESM (parents before children, " +
	"shards in parallel; the first invocation on the child inheriting a parent's start key takes 1 s) calls a recording handler; lost=0, duplicated=0, reordered=0 across all shards in call order; " +
	"the bridge installed a new shard map per reshard and ends with the real open shard count"

func reshardCases() []Case {
	return []Case{
		{Name: "reshard-split-merge", Group: "reshard",
			Summary: "kinesis-mock, 2 shards: split shard 0 mid-run, later merge its two children back, while publishing; consumer reading as it goes",
			Rule:    ruleReshard,
			Run: func(ctx context.Context, t *T) error {
				return reshard(ctx, t, reshardPlan{ops: []string{"split", "merge"}})
			}},
		{Name: "reshard-update-shard-count", Group: "reshard",
			Summary: "kinesis-mock: UpdateShardCount 2 -> 4 (uniform scaling) mid-run while publishing; consumer reading as it goes",
			Rule:    ruleReshard,
			Run: func(ctx context.Context, t *T) error {
				return reshard(ctx, t, reshardPlan{ops: []string{"scale-4"}})
			}},
		{Name: "reshard-split-lagging-consumer", Group: "reshard",
			Summary: "a split with the bridge's default 100 ms flush window at 200 msg/s, and a consumer that starts only after everything was written (lag far beyond --reshard-settle 5s)",
			Rule:    ruleReshard,
			Run: func(ctx context.Context, t *T) error {
				return reshard(ctx, t, reshardPlan{ops: []string{"split"}, lateConsumer: true, rate: 200,
					options: func(o *bridge.Options) { o.MaxBufferedTime = bridge.NewOptions().MaxBufferedTime }})
			}},
	}
}

type reshardPlan struct {
	ops          []string
	lateConsumer bool
	rate         int
	hotRate      int           // > 0: one key of shard 0's upper half also gets this many messages per second
	listShards   time.Duration // > 0: every ListShards of the bridge takes this long (as when it is throttled)
	options      func(o *bridge.Options)
}

// recorder is an ESM handler that records every user record in call order. The first record it
// gets from a shard in slow takes coldStart to process: a cold start (or a throttled invocation)
// on the child that inherits its parent's start key, which is where a lane's aggregate in flight
// at a split lands. Lambda gives no order between sibling shards, so any such delay is legal.
type recorder struct {
	mu   sync.Mutex
	recs []UserRec
	seen map[string]int
	slow map[string]bool
}

const coldStart = time.Second

func (r *recorder) slowOnce(shard string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.slow[shard] {
		delete(r.slow, shard)
		return true
	}
	return false
}

func (r *recorder) markSlow(ids ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		r.slow[id] = true
	}
}

func (r *recorder) handle(_ context.Context, rec consumer.Record) error {
	if r.slowOnce(rec.ShardID) {
		time.Sleep(coldStart) // processing time of this invocation, not synchronisation
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	id := fmt.Sprintf("%s/%s/%d", rec.ShardID, rec.SequenceNumber, rec.SubSequence)
	cp := r.seen[id]
	r.seen[id]++
	r.recs = append(r.recs, UserRec{Shard: rec.ShardID, SeqNum: rec.SequenceNumber, Sub: rec.SubSequence,
		Data: append([]byte(nil), rec.Data...), Copy: cp, Arrival: rec.ArrivalTime})
	return nil
}

func (r *recorder) all() []UserRec {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]UserRec(nil), r.recs...)
}

func reshard(ctx context.Context, t *T, plan reshardPlan) error {
	r, err := t.NewRig(ctx, RigOptions{Shards: 2, Emulator: kinesislocal.KinesisMock})
	if err != nil {
		return err
	}
	o := r.BridgeOptions()
	if plan.options != nil {
		plan.options(&o)
	}
	var kc bridge.Kinesis = kinesislocal.NewClient(r.Tap.URL) // no fault front: kinesis-mock is the subject
	if plan.listShards > 0 {
		r.Front.Set(kinesisfault.Faults{Operations: []string{"ListShards"}, Delay: plan.listShards})
		kc = r.BridgeKinesis()
	}
	b, err := r.StartBridgeWith(o, kc)
	if err != nil {
		return err
	}
	if err := WaitFor(ctx, 60*time.Second, "bridge ready", b.B.Ready); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(t.Dir, "esm.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	rec := &recorder{seen: map[string]int{}, slow: map[string]bool{}}
	proc := consumer.NewProcessor(rec.handle, consumer.WithLogger(slog.New(slog.NewJSONHandler(logf, nil))))
	m := esm.New(r.KC, esm.Shared(proc.Handle), esm.Config{Stream: r.Stream, FunctionName: "chaos-recorder", BatchSize: 100,
		Logger: slog.New(slog.NewJSONHandler(logf, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	mctx, stopESM := context.WithCancel(ctx)
	defer stopESM()
	mdone := make(chan error, 1)
	startESM := func() {
		go func() { mdone <- m.Run(mctx) }()
		t.Event("consumer (ESM emulator) started")
	}
	if !plan.lateConsumer {
		startESM()
	}

	pub, err := r.NewPublisher(200, 43)
	if err != nil {
		return err
	}
	rate := 120
	if plan.rate > 0 {
		rate = plan.rate
	}
	total := t.Dur(40*time.Second, 24*time.Second)
	done := pub.Go(ctx, rate, total)
	var hotDone <-chan error
	if plan.hotRate > 0 {
		if hotDone, err = startHotKey(ctx, t, r, plan.hotRate, total); err != nil {
			return err
		}
	}
	wantChanges := 0
	for i, op := range plan.ops {
		at := total * time.Duration(i+1) / time.Duration(len(plan.ops)+1)
		if err := hold(ctx, at-t.Elapsed()); err != nil && ctx.Err() != nil {
			return err
		}
		heirs, err := reshardOp(ctx, t, r, op)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		rec.markSlow(heirs...)
		wantChanges++
	}
	if err := <-done; err != nil {
		return err
	}
	if plan.hotRate > 0 {
		if err := <-hotDone; err != nil {
			return err
		}
	}
	if err := r.WaitDrained(ctx, 3*time.Minute); err != nil {
		return err
	}
	mf := r.StopInProc(b)
	noteBridge(t, mf)

	stream, nrec, err := r.ReadStream(ctx)
	if err != nil {
		return err
	}
	if plan.lateConsumer {
		startESM()
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	s, werr := m.Wait(wctx, func(s esm.Stats) bool { return s.RecordsDone >= int64(nrec) })
	cancel()
	stopESM()
	<-mdone
	if werr != nil {
		return fmt.Errorf("the consumer handled %d of %d Kinesis records", s.RecordsDone, nrec)
	}
	t.Event("consumer handled all %d Kinesis records (%d invocations)", nrec, s.Invocations)

	// The verdict: what the consumer saw, in the order it saw it.
	obs := Observed{Stream: rec.all(), DeadLetters: r.DL.All()}
	a := r.Account(obs)
	t.Judge(a, Expect{})

	// For comparison: the stream read parents before children, one shard after the other.
	lin := r.Ledger.Account(Observed{Stream: stream, DeadLetters: r.DL.All()})
	t.Note("read shard by shard (parents first, children one after the other): %d distinct, %d duplicated, %d reordered", lin.Delivered, lin.Duplicated, lin.Reordered)
	t.Metric("lineage_order", map[string]int{"delivered": lin.Delivered, "duplicated": lin.Duplicated, "reordered": lin.Reordered})

	// The bridge follows the new map.
	changes := mf.Value("nsqk_bridge_shard_map_changes_total")
	open := mf.Value("nsqk_bridge_open_shards")
	final, err := shardmap.Load(ctx, r.KC, r.Stream)
	if err != nil {
		return err
	}
	t.Check("the bridge installed each new shard map", changes >= float64(wantChanges) && int(open) == final.Len(),
		"%.0f shard map changes for %d reshards; the bridge's map has %.0f open shards, the stream %d", changes, wantChanges, open, final.Len())
	misplaced, misplacedUsers := misplacedRecords(ctx, r, stream)
	t.Note("misrouted entries (bridge metric): %.0f; Kinesis records holding a key outside their shard's range (read from the stream): %d, with %d user records",
		mf.Value("nsqk_bridge_misrouted_entries_total"), misplaced, misplacedUsers)
	t.Metric("misplaced_records", misplaced)
	t.Metric("misplaced_user_records", misplacedUsers)
	return nil
}

// reshardOp performs one reshard and waits until the stream is ACTIVE again. It returns the new
// shards that start where a parent started (they receive what the parent's lanes had in flight).
func reshardOp(ctx context.Context, t *T, r *Rig, op string) ([]string, error) {
	m, err := shardmap.Load(ctx, r.KC, r.Stream)
	if err != nil {
		return nil, err
	}
	switch op {
	case "split":
		s := m.Shards()[0]
		mid := midpoint(s.Start, s.End)
		_, err = r.KC.SplitShard(ctx, &kinesis.SplitShardInput{StreamName: aws.String(r.Stream), ShardToSplit: aws.String(s.ID),
			NewStartingHashKey: aws.String(mid.String())})
		t.Event("split %s at %s", s.ID, mid)
	case "merge":
		a, b := m.Shards()[0], m.Shards()[1]
		_, err = r.KC.MergeShards(ctx, &kinesis.MergeShardsInput{StreamName: aws.String(r.Stream), ShardToMerge: aws.String(a.ID),
			AdjacentShardToMerge: aws.String(b.ID)})
		t.Event("merge %s + %s", a.ID, b.ID)
	case "scale-4":
		_, err = r.KC.UpdateShardCount(ctx, &kinesis.UpdateShardCountInput{StreamName: aws.String(r.Stream), TargetShardCount: aws.Int32(4),
			ScalingType: types.ScalingTypeUniformScaling})
		t.Event("UpdateShardCount %d -> 4", m.Len())
	default:
		return nil, fmt.Errorf("unknown reshard %q", op)
	}
	if err != nil {
		return nil, err
	}
	if err := kinesislocal.WaitActive(ctx, r.KC, r.Stream); err != nil {
		return nil, err
	}
	m2, err := shardmap.Load(ctx, r.KC, r.Stream)
	if err != nil {
		return nil, err
	}
	var heirs []string
	for _, n := range m2.Shards() {
		if m.Index(n.ID) >= 0 {
			continue
		}
		for _, p := range m.Shards() {
			if p.Start == n.Start && m2.Index(p.ID) < 0 {
				heirs = append(heirs, n.ID)
			}
		}
	}
	t.Event("stream ACTIVE again: %s; first invocation on %v will take %s (cold start)", m2, heirs, coldStart)
	return heirs, nil
}

// misplacedRecords counts Kinesis records (and their user records) holding a user key whose hash
// is outside the range of the shard the record is on.
func misplacedRecords(ctx context.Context, r *Rig, stream []UserRec) (records, users int) {
	shards, err := ShardOrder(ctx, r.KC, r.Stream)
	if err != nil {
		return -1, -1
	}
	ranges := map[string][2]shardmap.Hash{}
	for _, s := range shards {
		lo, _ := shardmap.ParseHash(aws.ToString(s.HashKeyRange.StartingHashKey))
		hi, _ := shardmap.ParseHash(aws.ToString(s.HashKeyRange.EndingHashKey))
		ranges[aws.ToString(s.ShardId)] = [2]shardmap.Hash{lo, hi}
	}
	bad := map[string]bool{}
	for _, u := range stream {
		m, err := location.Parse(u.Data)
		if err != nil {
			continue
		}
		h := shardmap.HashKey(m.UserID)
		rg := ranges[u.Shard]
		if h.Compare(rg[0]) < 0 || h.Compare(rg[1]) > 0 {
			users++
			bad[u.Shard+"/"+u.SeqNum] = true
		}
	}
	return len(bad), users
}

// midpoint returns (a+b)/2 on 128 bits.
func midpoint(a, b shardmap.Hash) shardmap.Hash {
	var out shardmap.Hash
	carry := 0
	for i := 15; i >= 0; i-- {
		s := int(a[i]) + int(b[i]) + carry
		out[i], carry = byte(s), s>>8
	}
	for i := 0; i < 16; i++ {
		next := out[i] & 1
		out[i] = out[i]>>1 | byte(carry<<7)
		carry = int(next)
	}
	return out
}
