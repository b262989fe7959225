package logread_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/kinesisfault"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/localtest"
	"github.com/nsqk/nsqk/shared/logread"
	"github.com/nsqk/nsqk/shared/shardmap"
)

// got is a user record as read, copied out of the reader's buffers.
type got struct {
	Shard, Seq string
	Sub        int
	Agg        bool
	PK         string
	EHK        *string
	Data       string
	Arrival    time.Time
}

type result struct {
	recs     []got
	warnings []string
	stats    logread.Stats
}

func read(ctx context.Context, t *testing.T, kc logread.Kinesis, o logread.Options) (result, error) {
	t.Helper()
	var res result
	var mu sync.Mutex
	o.Warn = func(m string) {
		mu.Lock()
		res.warnings = append(res.warnings, m)
		mu.Unlock()
	}
	r, err := logread.New(kc, o)
	if err != nil {
		return res, err
	}
	err = r.Run(ctx, func(rec *logread.Record) error {
		g := got{Shard: rec.ShardID, Seq: rec.SequenceNumber, Sub: rec.SubSequence, Agg: rec.Aggregated,
			PK: string(rec.PartitionKey), Data: string(rec.Data), Arrival: rec.Arrival}
		if rec.ExplicitHashKey != nil {
			s := string(rec.ExplicitHashKey)
			g.EHK = &s
		}
		mu.Lock()
		res.recs = append(res.recs, g)
		mu.Unlock()
		return nil
	})
	res.stats = r.Stats()
	return res, err
}

func putRecord(t testing.TB, kc *kinesis.Client, stream, pk, ehk string, data []byte) *kinesis.PutRecordOutput {
	t.Helper()
	in := &kinesis.PutRecordInput{StreamName: aws.String(stream), PartitionKey: aws.String(pk), Data: data}
	if ehk != "" {
		in.ExplicitHashKey = aws.String(ehk)
	}
	out, err := kc.PutRecord(context.Background(), in)
	if err != nil {
		t.Fatalf("PutRecord: %v", err)
	}
	return out
}

// writeKeys writes rounds of records for keys: per key and round, an aggregate of three user
// records (outer key = the key, so it lands on the key's shard), then one plain record. It
// returns each key's data in the order written.
func writeKeys(t testing.TB, kc *kinesis.Client, stream string, keys []string, rounds, from int) map[string][]string {
	t.Helper()
	want := map[string][]string{}
	for i := from; i < from+rounds; i++ {
		for _, k := range keys {
			agg := kpl.NewAggregator(kpl.AggregatorConfig{OuterPartitionKey: k})
			for j := range 3 {
				d := fmt.Sprintf("%s/%d/%d", k, i, j)
				if err := agg.Add(k, "", []byte(d)); err != nil {
					t.Fatal(err)
				}
				want[k] = append(want[k], d)
			}
			rec := agg.Flush(nil)
			putRecord(t, kc, stream, rec.PartitionKey, rec.ExplicitHashKey, rec.Data)
			d := fmt.Sprintf("%s/%d/plain", k, i)
			putRecord(t, kc, stream, k, "", []byte(d))
			want[k] = append(want[k], d)
		}
	}
	return want
}

// checkKeys checks that every key's records came out exactly once each, in the order written.
func checkKeys(t *testing.T, recs []got, want map[string][]string) {
	t.Helper()
	byKey := map[string][]string{}
	seen := map[string]int{}
	for _, r := range recs {
		id := fmt.Sprintf("%s/%s/%d", r.Shard, r.Seq, r.Sub)
		if seen[id]++; seen[id] > 1 {
			t.Errorf("record %s printed twice", id)
		}
		byKey[r.PK] = append(byKey[r.PK], r.Data)
	}
	for k, w := range want {
		if g := byKey[k]; strings.Join(g, " ") != strings.Join(w, " ") {
			t.Errorf("key %s: got %d records %v\nwant %d %v", k, len(g), g, len(w), w)
		}
	}
	for k := range byKey {
		if want[k] == nil {
			t.Errorf("records of an unexpected key %q", k)
		}
	}
}

func keys(n int) []string {
	var ks []string
	for i := range n {
		ks = append(ks, fmt.Sprintf("user-%02d", i))
	}
	return ks
}

func TestReadsEveryShardDeaggregatedInOrder(t *testing.T) {
	for _, kind := range []kinesislocal.Kind{kinesislocal.Kinesalite, kinesislocal.KinesisMock} {
		t.Run(string(kind), func(t *testing.T) { readsEveryShard(t, kind) })
	}
}

func readsEveryShard(t *testing.T, kind kinesislocal.Kind) {
	e := localtest.Kinesis(t, kinesislocal.Options{Kind: kind})
	kc := e.Client()
	stream := localtest.Stream(t, kc, 3)
	ks := keys(12)
	want := writeKeys(t, kc, stream, ks, 4, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A small page size exercises many pages per shard.
	res, err := read(ctx, t, kc, logread.Options{Stream: stream, Limit: 7, MinInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	checkKeys(t, res.recs, want)
	shards := map[string]bool{}
	for _, r := range res.recs {
		shards[r.Shard] = true
		plain := strings.HasSuffix(r.Data, "/plain")
		if r.Agg == plain || plain && r.Sub != 0 || r.EHK != nil {
			t.Errorf("record %+v: aggregated=%v sub=%d ehk=%v", r, r.Agg, r.Sub, r.EHK)
		}
		if !plain && fmt.Sprint(r.Sub) != r.Data[len(r.Data)-1:] {
			t.Errorf("record %q has sub-sequence number %d", r.Data, r.Sub)
		}
		if r.Arrival.IsZero() || time.Since(r.Arrival) > time.Minute {
			t.Errorf("record %q arrival time %v", r.Data, r.Arrival)
		}
	}
	if len(shards) != 3 {
		t.Errorf("records came from %d shards, want 3", len(shards))
	}
	if s := res.stats; s.ShardsDone != 3 || s.ShardsTotal != 3 || s.UserRecords != int64(len(res.recs)) || s.KinesisRecords != 12*4*2 {
		t.Errorf("stats %+v", s)
	}
	if len(res.warnings) != 0 {
		t.Errorf("warnings: %v", res.warnings)
	}
}

func TestKeyReadsOnlyItsShards(t *testing.T) {
	e := localtest.Kinesis(t, kinesislocal.Options{})
	kc := e.Client()
	stream := localtest.Stream(t, kc, 4)
	ks := keys(16)
	want := writeKeys(t, kc, stream, ks, 2, 0)
	m, err := shardmap.Load(context.Background(), kc, stream)
	if err != nil {
		t.Fatal(err)
	}
	key := ks[5]
	home := m.Shards()[m.Lookup(shardmap.HashKey(key))].ID
	cc := &countingClient{Client: kc, shards: map[string]int{}}
	res, err := read(context.Background(), t, cc, logread.Options{Stream: stream, Keys: []string{key}})
	if err != nil {
		t.Fatal(err)
	}
	checkKeys(t, res.recs, map[string][]string{key: want[key]})
	if len(cc.shards) != 1 || cc.shards[home] == 0 {
		t.Errorf("iterators taken for shards %v; want only %s", cc.shards, home)
	}
}

// countingClient counts the shard iterators asked for, per shard.
type countingClient struct {
	*kinesis.Client
	mu     sync.Mutex
	shards map[string]int
}

func (c *countingClient) GetShardIterator(ctx context.Context, in *kinesis.GetShardIteratorInput, o ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error) {
	c.mu.Lock()
	c.shards[aws.ToString(in.ShardId)]++
	c.mu.Unlock()
	return c.Client.GetShardIterator(ctx, in, o...)
}

func TestSelectedShardsAndTimeRange(t *testing.T) {
	for _, kind := range []kinesislocal.Kind{kinesislocal.Kinesalite, kinesislocal.KinesisMock} {
		t.Run(string(kind), func(t *testing.T) { selectedShardsAndTimeRange(t, kind) })
	}
}

func selectedShardsAndTimeRange(t *testing.T, kind kinesislocal.Kind) {
	e := localtest.Kinesis(t, kinesislocal.Options{Kind: kind})
	kc := e.Client()
	stream := localtest.Stream(t, kc, 2)
	ks := keys(6)
	first := writeKeys(t, kc, stream, ks, 2, 0)
	// Arrival times have millisecond resolution: leave a gap between the two writes.
	time.Sleep(20 * time.Millisecond)
	mid := time.Now()
	time.Sleep(20 * time.Millisecond)
	second := writeKeys(t, kc, stream, ks, 2, 2)

	res, err := read(context.Background(), t, kc, logread.Options{Stream: stream, To: mid})
	if err != nil {
		t.Fatal(err)
	}
	checkKeys(t, res.recs, first)
	res, err = read(context.Background(), t, kc, logread.Options{Stream: stream, From: logread.AtTime(mid)})
	if err != nil {
		t.Fatal(err)
	}
	checkKeys(t, res.recs, second)

	m, _ := shardmap.Load(context.Background(), kc, stream)
	only := m.Shards()[1].ID
	res, err = read(context.Background(), t, kc, logread.Options{Stream: stream, Shards: []string{only}})
	if err != nil {
		t.Fatal(err)
	}
	wantOnly := map[string][]string{}
	for _, k := range ks {
		if m.Shards()[m.Lookup(shardmap.HashKey(k))].ID == only {
			wantOnly[k] = append(append([]string(nil), first[k]...), second[k]...)
		}
	}
	if len(wantOnly) == 0 {
		t.Fatal("no key on the selected shard")
	}
	checkKeys(t, res.recs, wantOnly)
}

func TestErrors(t *testing.T) {
	e := localtest.Kinesis(t, kinesislocal.Options{})
	kc := e.Client()
	_, err := read(context.Background(), t, kc, logread.Options{Stream: "no-such-stream"})
	if !errors.Is(err, logread.ErrStreamNotFound) {
		t.Errorf("unknown stream: %v, want ErrStreamNotFound", err)
	}
	stream := localtest.Stream(t, kc, 1)
	_, err = read(context.Background(), t, kc, logread.Options{Stream: stream, Shards: []string{"shardId-000000000009"}})
	if err == nil || !strings.Contains(err.Error(), "no shard shardId-000000000009") {
		t.Errorf("unknown shard: %v", err)
	}
	if _, err := logread.ParsePosition("yesterday", time.Now()); err == nil {
		t.Error("ParsePosition accepted \"yesterday\"")
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for in, want := range map[string]logread.Position{
		"trim-horizon":         logread.TrimHorizon,
		"LATEST":               logread.Latest,
		"15m":                  logread.AtTime(now.Add(-15 * time.Minute)),
		"2026-01-01T00:00:00Z": logread.AtTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
	} {
		p, err := logread.ParsePosition(in, now)
		if err != nil || p.Type != want.Type || !p.At.Equal(want.At) {
			t.Errorf("ParsePosition(%q) = %v, %v; want %v", in, p, err, want)
		}
	}
}

// TestExpiredIteratorsAndThrottling reads through the fault front, which fails GetRecords calls
// with ExpiredIteratorException or ProvisionedThroughputExceededException as Kinesis does (the
// request is not forwarded): every record must still come out exactly once, in order.
func TestExpiredIteratorsAndThrottling(t *testing.T) {
	e := localtest.Kinesis(t, kinesislocal.Options{})
	kc := e.Client()
	stream := localtest.Stream(t, kc, 2)
	ks := keys(8)
	want := writeKeys(t, kc, stream, ks, 5, 0)
	for _, code := range []string{"ExpiredIteratorException", "ProvisionedThroughputExceededException"} {
		t.Run(code, func(t *testing.T) {
			front, err := kinesisfault.Start(e.Endpoint)
			if err != nil {
				t.Fatal(err)
			}
			defer front.Close()
			front.Set(kinesisfault.Faults{Operations: []string{"GetRecords"}, RequestErrorRate: 0.4,
				RequestErrorStatus: 400, RequestErrorType: code})
			// No SDK retries: the reader's own handling is under test.
			fc := kinesislocal.NewClient(front.URL, func(o *kinesis.Options) { o.RetryMaxAttempts = 1 })
			res, err := read(context.Background(), t, fc, logread.Options{Stream: stream, Limit: 5, MinInterval: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			checkKeys(t, res.recs, want)
			injected := front.Stats().RequestErrors
			if injected == 0 {
				t.Fatal("the front injected nothing")
			}
			s := res.stats
			switch code {
			case "ExpiredIteratorException":
				if s.IteratorsRenewed != injected {
					t.Errorf("%d iterators renewed, %d expired", s.IteratorsRenewed, injected)
				}
			default:
				if s.Throttled != injected {
					t.Errorf("%d throttled reads backed off, %d injected", s.Throttled, injected)
				}
			}
		})
	}
}

type vector struct {
	Name              string  `json:"name"`
	AggregatedBase64  string  `json:"aggregated_base64"`
	OuterPartitionKey *string `json:"outer_partition_key"`
	Expect            struct {
		Aggregated bool `json:"aggregated"`
		Valid      bool `json:"valid"`
		Records    []struct {
			PartitionKey    *string `json:"partition_key"`
			ExplicitHashKey *string `json:"explicit_hash_key"`
			DataBase64      string  `json:"data_base64"`
		} `json:"records"`
	} `json:"expect"`
}

// TestKPLVectors writes every vector of shared/kpl/testdata to a stream as one Kinesis record
// and reads it back: the user records, keys and sub-sequence numbers the vector expects, and for
// an aggregate that cannot be fully expanded, the records before the fault and a warning.
func TestKPLVectors(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "kpl", "testdata", "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(raw, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) != 31 {
		t.Fatalf("%d vectors, want 31", len(vs))
	}
	e := localtest.Kinesis(t, kinesislocal.Options{})
	kc := e.Client()
	stream := localtest.Stream(t, kc, 1)
	seqs := map[string]int{} // sequence number -> vector
	for i, v := range vs {
		data, err := base64.StdEncoding.DecodeString(v.AggregatedBase64)
		if err != nil {
			t.Fatal(err)
		}
		pk := "vector"
		if v.OuterPartitionKey != nil {
			pk = *v.OuterPartitionKey
		}
		out := putRecord(t, kc, stream, pk, "", data)
		seqs[aws.ToString(out.SequenceNumber)] = i
	}
	res, err := read(context.Background(), t, kc, logread.Options{Stream: stream})
	if err != nil {
		t.Fatal(err)
	}
	byVector := make([][]got, len(vs))
	for _, r := range res.recs {
		i, ok := seqs[r.Seq]
		if !ok {
			t.Fatalf("record with unknown sequence number %s", r.Seq)
		}
		byVector[i] = append(byVector[i], r)
	}
	invalid := 0
	for i, v := range vs {
		g := byVector[i]
		if len(g) != len(v.Expect.Records) {
			t.Errorf("%s: %d records, want %d", v.Name, len(g), len(v.Expect.Records))
			continue
		}
		for j, w := range v.Expect.Records {
			d, _ := base64.StdEncoding.DecodeString(w.DataBase64)
			wantPK := "vector"
			if w.PartitionKey != nil {
				wantPK = *w.PartitionKey
			}
			if g[j].Data != string(d) || g[j].PK != wantPK || g[j].Agg != v.Expect.Aggregated || g[j].Sub != j && v.Expect.Aggregated ||
				(g[j].EHK == nil) != (w.ExplicitHashKey == nil) || g[j].EHK != nil && *g[j].EHK != *w.ExplicitHashKey {
				t.Errorf("%s: record %d = %+v, want %+v", v.Name, j, g[j], w)
			}
		}
		if !v.Expect.Valid {
			invalid++
		}
	}
	if len(res.warnings) != invalid || invalid == 0 {
		t.Errorf("%d warnings for %d vectors that cannot be fully expanded: %v", len(res.warnings), invalid, res.warnings)
	}
	for _, w := range res.warnings {
		if !strings.Contains(w, "aggregate only partly expanded") {
			t.Errorf("warning %q", w)
		}
	}
}

// TestCorruptAggregates: an aggregate with a key index out of range gives the records before the
// fault and a warning; one with a bad checksum or a broken protobuf passes through whole.
func TestCorruptAggregates(t *testing.T) {
	e := localtest.Kinesis(t, kinesislocal.Options{})
	kc := e.Client()
	stream := localtest.Stream(t, kc, 1)
	agg := kpl.NewAggregator(kpl.AggregatorConfig{})
	for _, d := range []string{"a", "b", "c"} {
		agg.Add("k", "", []byte(d))
	}
	good := agg.Flush(nil).Data
	// Change the third record's partition_key_index (0) to 5 and fix the checksum.
	body := append([]byte(nil), good[4:len(good)-16]...)
	i := bytes.LastIndex(body, []byte{0x08, 0x00}) // Record{1: partition_key_index = 0}
	if i < 0 {
		t.Fatal("no partition_key_index in the last record")
	}
	body[i+1] = 5
	badIndex := reframe(body)
	badSum := append([]byte(nil), good...)
	badSum[len(badSum)-1] ^= 1
	badProto := reframe(append(append([]byte(nil), good[4:len(good)-16]...), 0xff))
	putRecord(t, kc, stream, "outer", "", badIndex)
	putRecord(t, kc, stream, "outer", "", badSum)
	putRecord(t, kc, stream, "outer", "", badProto)

	res, err := read(context.Background(), t, kc, logread.Options{Stream: stream})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.recs) != 4 {
		t.Fatalf("%d records, want 2 + 1 + 1: %+v", len(res.recs), res.recs)
	}
	if r := res.recs; r[0].Data != "a" || r[1].Data != "b" || !r[0].Agg || r[1].Sub != 1 || r[0].PK != "k" {
		t.Errorf("records before the fault: %+v", r[:2])
	}
	if r := res.recs[2]; r.Agg || r.Data != string(badSum) || r.PK != "outer" {
		t.Errorf("bad checksum: %+v", r)
	}
	if r := res.recs[3]; r.Agg || r.Data != string(badProto) || r.PK != "outer" {
		t.Errorf("broken protobuf: %+v", r)
	}
	if len(res.warnings) != 1 || !strings.Contains(res.warnings[0], "2 user records before the fault") {
		t.Errorf("warnings %v", res.warnings)
	}
}

func reframe(body []byte) []byte {
	sum := md5.Sum(body)
	return append(append([]byte(kpl.Magic), body...), sum[:]...)
}

// TestFollowAcrossSplitAndMerge follows a kinesis-mock stream while a writer writes keys
// without pause and the stream is split and then merged: every key's records must come out
// once each and in order, children after their parents.
func TestFollowAcrossSplitAndMerge(t *testing.T) {
	e := localtest.Kinesis(t, kinesislocal.Options{Kind: kinesislocal.KinesisMock})
	kc := e.Client()
	stream := localtest.Stream(t, kc, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var mu sync.Mutex
	var recs []got
	var warnings []string
	r, err := logread.New(kc, logread.Options{Stream: stream, Follow: true, From: logread.TrimHorizon,
		PollInterval: 100 * time.Millisecond, MinInterval: 20 * time.Millisecond,
		Warn: func(m string) { warnings = append(warnings, m) }})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- r.Run(rctx, func(rec *logread.Record) error {
			mu.Lock()
			recs = append(recs, got{Shard: rec.ShardID, Seq: rec.SequenceNumber, Sub: rec.SubSequence, PK: string(rec.PartitionKey), Data: string(rec.Data)})
			mu.Unlock()
			return nil
		})
	}()

	ks := keys(10)
	want := map[string][]string{}
	round := 0
	write := func(n int) {
		for range n {
			for k, d := range writeKeys(t, kc, stream, ks, 1, round) {
				want[k] = append(want[k], d...)
			}
			round++
		}
	}
	write(3)
	shards, err := shardmap.ListAll(ctx, kc, stream)
	if err != nil {
		t.Fatal(err)
	}
	// Split the first shard in the middle of its range.
	first := shards[0]
	start, _ := shardmap.ParseHash(aws.ToString(first.HashKeyRange.StartingHashKey))
	end, _ := shardmap.ParseHash(aws.ToString(first.HashKeyRange.EndingHashKey))
	_, err = kc.SplitShard(ctx, &kinesis.SplitShardInput{StreamName: aws.String(stream), ShardToSplit: first.ShardId,
		NewStartingHashKey: aws.String(midpoint(start, end))})
	if err != nil {
		t.Fatal(err)
	}
	if err := kinesislocal.WaitActive(ctx, kc, stream); err != nil {
		t.Fatal(err)
	}
	write(3)
	// Merge the two children of the split.
	shards, _ = shardmap.ListAll(ctx, kc, stream)
	var kids []types.Shard
	for _, s := range shards {
		if aws.ToString(s.ParentShardId) == aws.ToString(first.ShardId) {
			kids = append(kids, s)
		}
	}
	if len(kids) != 2 {
		t.Fatalf("split made %d children", len(kids))
	}
	_, err = kc.MergeShards(ctx, &kinesis.MergeShardsInput{StreamName: aws.String(stream), ShardToMerge: kids[0].ShardId,
		AdjacentShardToMerge: kids[1].ShardId})
	if err != nil {
		t.Fatal(err)
	}
	if err := kinesislocal.WaitActive(ctx, kc, stream); err != nil {
		t.Fatal(err)
	}
	write(3)
	total := 0
	for _, d := range want {
		total += len(d)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		mu.Lock()
		n := len(recs)
		mu.Unlock()
		if n >= total || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	checkKeys(t, recs, want)
	shardsSeen := map[string]bool{}
	for _, r := range recs {
		shardsSeen[r.Shard] = true
	}
	if len(shardsSeen) != 5 {
		t.Errorf("records from %d shards (%v), want 5: two, the split's two children and the merge's child", len(shardsSeen), shardsSeen)
	}
	// Parents before children: no record of a child before the last record of its parent.
	all, _ := shardmap.ListAll(ctx, kc, stream)
	pos := map[string][2]int{}
	for i, r := range recs {
		p, ok := pos[r.Shard]
		if !ok {
			p[0] = i
		}
		p[1] = i
		pos[r.Shard] = p
	}
	for _, s := range all {
		c, ok := pos[aws.ToString(s.ShardId)]
		for _, parent := range []string{aws.ToString(s.ParentShardId), aws.ToString(s.AdjacentParentShardId)} {
			if pp, pok := pos[parent]; ok && pok && c[0] < pp[1] {
				t.Errorf("shard %s printed before its parent %s ended", aws.ToString(s.ShardId), parent)
			}
		}
	}
	if len(warnings) != 0 {
		t.Errorf("warnings: %v", warnings)
	}
}

func midpoint(a, b shardmap.Hash) string {
	var x, y, s big.Int
	x.SetBytes(a[:])
	y.SetBytes(b[:])
	s.Add(&x, &y)
	s.Rsh(&s, 1)
	return s.String()
}

// TestFromTimeOnAQuietShard reads from a time at which one shard has no later record: kinesalite
// never answers that AT_TIMESTAMP request, and the reader falls back to the trim horizon.
func TestFromTimeOnAQuietShard(t *testing.T) {
	e := localtest.Kinesis(t, kinesislocal.Options{})
	kc := e.Client()
	stream := localtest.Stream(t, kc, 2)
	m, _ := shardmap.Load(context.Background(), kc, stream)
	var onFirst []string
	for _, k := range keys(20) {
		if m.Lookup(shardmap.HashKey(k)) == 0 {
			onFirst = append(onFirst, k)
		}
	}
	writeKeys(t, kc, stream, keys(20), 1, 0)
	time.Sleep(20 * time.Millisecond)
	from := time.Now()
	time.Sleep(20 * time.Millisecond)
	after := writeKeys(t, kc, stream, onFirst, 2, 1)
	res, err := read(context.Background(), t, kc, logread.Options{Stream: stream, From: logread.AtTime(from), AtTimestampTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	checkKeys(t, res.recs, after)
	if len(res.warnings) != 1 || !strings.Contains(res.warnings[0], "reading from the trim horizon instead") {
		t.Errorf("warnings %v", res.warnings)
	}
	// The emulator still answers.
	if _, err := read(context.Background(), t, kc, logread.Options{Stream: stream}); err != nil {
		t.Fatal(err)
	}
}

// TestFollowFromLatestThroughExpiredIterators follows from LATEST while GetRecords calls fail
// with ExpiredIteratorException, before and after the first records: nothing written after the
// reader started may be missed (a renewed LATEST iterator would skip) or printed twice.
func TestFollowFromLatestThroughExpiredIterators(t *testing.T) {
	e := localtest.Kinesis(t, kinesislocal.Options{})
	kc := e.Client()
	stream := localtest.Stream(t, kc, 2)
	writeKeys(t, kc, stream, keys(6), 2, 0) // before the reader: not wanted
	front, err := kinesisfault.Start(e.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	front.Set(kinesisfault.Faults{Operations: []string{"GetRecords"}, RequestErrorRate: 0.5,
		RequestErrorStatus: 400, RequestErrorType: "ExpiredIteratorException"})
	fc := kinesislocal.NewClient(front.URL, func(o *kinesis.Options) { o.RetryMaxAttempts = 1 })
	var mu sync.Mutex
	var recs []got
	r, err := logread.New(fc, logread.Options{Stream: stream, Follow: true, From: logread.Latest, Limit: 3,
		PollInterval: 50 * time.Millisecond, MinInterval: 5 * time.Millisecond, AtTimestampTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- r.Run(ctx, func(rec *logread.Record) error {
			mu.Lock()
			recs = append(recs, got{Shard: rec.ShardID, Seq: rec.SequenceNumber, Sub: rec.SubSequence, PK: string(rec.PartitionKey), Data: string(rec.Data)})
			mu.Unlock()
			return nil
		})
	}()
	// Both shards are being polled (and some of their iterators have expired) before writing.
	deadline := time.Now().Add(30 * time.Second)
	for front.Stats().RequestErrors < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	want := writeKeys(t, kc, stream, keys(6), 4, 2)
	total := 0
	for _, d := range want {
		total += len(d)
	}
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(recs)
		mu.Unlock()
		if n >= total {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	checkKeys(t, recs, want)
	if s := r.Stats(); s.IteratorsRenewed == 0 {
		t.Errorf("no iterator renewed: %+v", s)
	}
}
