package nullsink

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"

	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/location"
	"github.com/nsqk/nsqk/shared/shardmap"
)

func startSink(t *testing.T, cfg Config) (*Server, *kinesis.Client) {
	t.Helper()
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	// The SDK's own retries stay on: under a loaded test run a request has been seen to lose its
	// connection mid-response (once in a full make test), which is the transport's business, not
	// what these tests check (whole-request failures do not occur in the sink; entry results do).
	return s, kinesislocal.NewClient(s.URL)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestShardRanges(t *testing.T) {
	for _, n := range []int{1, 2, 3, 4, 7, 16, 100} {
		shards := ShardRanges(n)
		if _, err := shardmap.New(shards); err != nil {
			t.Fatalf("%d shards do not tile the space: %v", n, err)
		}
		if n == 4 && shards[1].StartKey != "85070591730234615865843651857942052864" {
			t.Fatalf("4 shards: second starts at %s", shards[1].StartKey)
		}
		if n == 3 && shards[2].End.String() != "340282366920938463463374607431768211455" {
			t.Fatalf("3 shards: last ends at %s", shards[2].End)
		}
	}
}

func TestDescribeAndListShards(t *testing.T) {
	s, c := startSink(t, Config{Stream: "st", Shards: 4, MaxRecordSizeKiB: 2048})
	out, err := c.DescribeStreamSummary(ctx(t), &kinesis.DescribeStreamSummaryInput{StreamName: aws.String("st")})
	if err != nil {
		t.Fatal(err)
	}
	d := out.StreamDescriptionSummary
	if aws.ToInt32(d.OpenShardCount) != 4 || aws.ToInt32(d.MaxRecordSizeInKiB) != 2048 || d.StreamStatus != types.StreamStatusActive ||
		aws.ToString(d.StreamARN) != s.ARN() {
		t.Fatalf("summary %+v", d)
	}
	if _, err := c.DescribeStreamSummary(ctx(t), &kinesis.DescribeStreamSummaryInput{StreamARN: aws.String(s.ARN())}); err != nil {
		t.Fatalf("by ARN: %v", err)
	}
	m, err := shardmap.Load(ctx(t), c, "st")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := shardmap.New(ShardRanges(4))
	if !m.Equal(want) {
		t.Fatalf("ListShards gave %v", m.Shards())
	}
	_, err = c.ListShards(ctx(t), &kinesis.ListShardsInput{StreamName: aws.String("other")})
	var nf *types.ResourceNotFoundException
	if !errors.As(err, &nf) {
		t.Fatalf("unknown stream: %v", err)
	}
	_, err = c.PutRecords(ctx(t), &kinesis.PutRecordsInput{StreamName: aws.String("other"),
		Records: []types.PutRecordsRequestEntry{{Data: []byte("x"), PartitionKey: aws.String("k")}}})
	if !errors.As(err, &nf) {
		t.Fatalf("PutRecords to an unknown stream: %v", err)
	}
}

// randomKeys returns n partition keys of assorted lengths and characters.
func randomKeys(n int, seed uint64) []string {
	r := rand.New(rand.NewPCG(seed, 7))
	keys := make([]string, n)
	for i := range keys {
		switch i % 4 {
		case 0:
			keys[i] = location.UserID(r.IntN(100000))
		case 1:
			keys[i] = fmt.Sprintf("key-%d", r.Uint64())
		case 2:
			keys[i] = strings.Repeat("é", 1+r.IntN(20))
		default:
			b := make([]byte, 1+r.IntN(64))
			for j := range b {
				b[j] = byte('!' + r.IntN(90))
			}
			keys[i] = string(b)
		}
	}
	return keys
}

// putAll writes one entry per key (in requests of up to 500) and returns the shard id of each.
func putAll(t *testing.T, c *kinesis.Client, stream string, keys []string, ehks []string) []string {
	t.Helper()
	var ids []string
	for i := 0; i < len(keys); i += 500 {
		in := &kinesis.PutRecordsInput{StreamName: aws.String(stream)}
		for j := i; j < min(i+500, len(keys)); j++ {
			e := types.PutRecordsRequestEntry{Data: []byte("d"), PartitionKey: aws.String(keys[j])}
			if ehks != nil && ehks[j] != "" {
				e.ExplicitHashKey = aws.String(ehks[j])
			}
			in.Records = append(in.Records, e)
		}
		out, err := c.PutRecords(ctx(t), in)
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToInt32(out.FailedRecordCount) != 0 {
			t.Fatalf("%d failed", aws.ToInt32(out.FailedRecordCount))
		}
		for _, r := range out.Records {
			ids = append(ids, aws.ToString(r.ShardId))
		}
	}
	return ids
}

// hashKeysFor returns explicit hash keys for every other key: shard boundaries and random values.
func hashKeysFor(keys []string, shards []shardmap.Shard) []string {
	r := rand.New(rand.NewPCG(3, 4))
	ehks := make([]string, len(keys))
	for i := range ehks {
		switch {
		case i%2 == 0:
		case i%6 == 1:
			sh := shards[r.IntN(len(shards))]
			ehks[i] = sh.StartKey
		case i%6 == 3:
			ehks[i] = shards[r.IntN(len(shards))].End.String()
		default:
			var h shardmap.Hash
			for j := range h {
				h[j] = byte(r.Uint32())
			}
			ehks[i] = h.String()
		}
	}
	return ehks
}

func TestRoutingMatchesShardmap(t *testing.T) {
	for _, n := range []int{1, 3, 4, 16} {
		s, c := startSink(t, Config{Stream: "st", Shards: n})
		m, _ := shardmap.New(s.Shards())
		keys := randomKeys(1200, uint64(n))
		ehks := hashKeysFor(keys, s.Shards())
		ids := putAll(t, c, "st", keys, ehks)
		for i, k := range keys {
			h := shardmap.HashKey(k)
			if ehks[i] != "" {
				h, _ = shardmap.ParseHash(ehks[i])
			}
			if want := m.Shards()[m.Lookup(h)].ID; ids[i] != want {
				t.Fatalf("%d shards: key %q ehk %q went to %s, shardmap says %s", n, k, ehks[i], ids[i], want)
			}
		}
	}
}

func TestSequenceNumbersIncreasePerShard(t *testing.T) {
	_, c := startSink(t, Config{Stream: "st", Shards: 4})
	last := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				in := &kinesis.PutRecordsInput{StreamName: aws.String("st")}
				for _, k := range randomKeys(50, uint64(g*100+i)) {
					in.Records = append(in.Records, types.PutRecordsRequestEntry{Data: []byte("x"), PartitionKey: aws.String(k)})
				}
				out, err := c.PutRecords(context.Background(), in)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, r := range out.Records {
					id, seq := aws.ToString(r.ShardId), aws.ToString(r.SequenceNumber)
					if len(seq) != 56 {
						t.Errorf("sequence number %q", seq)
					}
					if seq <= last[id] && g == 0 { // per goroutine order only is observable; check one
						t.Errorf("shard %s: %s after %s", id, seq, last[id])
					}
					if g == 0 {
						last[id] = seq
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

func TestValidation(t *testing.T) {
	_, c := startSink(t, Config{Stream: "st", MaxRecordSizeKiB: 1})
	cases := map[string]*kinesis.PutRecordsInput{
		"ValidationException": {StreamName: aws.String("st"), Records: []types.PutRecordsRequestEntry{
			{Data: make([]byte, 1024), PartitionKey: aws.String("k")}}}, // 1025 bytes with the key
		"InvalidArgumentException": {StreamName: aws.String("st"), Records: []types.PutRecordsRequestEntry{
			{Data: []byte("x"), PartitionKey: aws.String("k"), ExplicitHashKey: aws.String("340282366920938463463374607431768211456")}}},
	}
	for want, in := range cases {
		_, err := c.PutRecords(ctx(t), in)
		var ae smithy.APIError
		if !errors.As(err, &ae) || ae.ErrorCode() != want {
			t.Errorf("want %s, got %v", want, err)
		}
	}
}

func TestAggregatesAreCountedAndVerified(t *testing.T) {
	const users = 50
	gen := location.NewGenerator(users, 1)
	expect := make([]uint64, users)
	var bodies [][]byte
	var keys []string
	for range 400 {
		b, u, seq := gen.Next(nil)
		n, _ := userNumber([]byte(u))
		expect[n] = seq
		bodies, keys = append(bodies, b), append(keys, u)
	}
	v := NewVerifier(expect)
	s, c := startSink(t, Config{Stream: "st", Shards: 4, Verifier: v})
	// One aggregate per shard, as the bridge builds them: outer explicit hash key = shard start.
	aggs := map[int]*kpl.Aggregator{}
	m, _ := shardmap.New(s.Shards())
	for i, b := range bodies {
		sh := m.Lookup(shardmap.HashKey(keys[i]))
		if aggs[sh] == nil {
			aggs[sh] = kpl.NewAggregator(kpl.AggregatorConfig{OuterExplicitHashKey: m.Shards()[sh].StartKey})
		}
		if err := aggs[sh].Add(keys[i], "", b); err != nil {
			t.Fatal(err)
		}
	}
	in := &kinesis.PutRecordsInput{StreamName: aws.String("st")}
	recBytes := 0
	for sh := range 4 {
		r := aggs[sh].Flush(nil)
		recBytes += len(r.Data) + len(r.PartitionKey)
		in.Records = append(in.Records, types.PutRecordsRequestEntry{Data: r.Data, PartitionKey: aws.String(r.PartitionKey),
			ExplicitHashKey: aws.String(r.ExplicitHashKey)})
	}
	// A plain record too: user record = the record itself, keyed by its partition key.
	b, u, seq := gen.Next(nil)
	n, _ := userNumber([]byte(u))
	v.Expect(n, seq)
	in.Records = append(in.Records, types.PutRecordsRequestEntry{Data: b, PartitionKey: aws.String(u)})
	recBytes += len(b) + len(u)
	out, err := c.PutRecords(ctx(t), in)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range out.Records[:4] {
		if want := m.Shards()[i].ID; aws.ToString(r.ShardId) != want {
			t.Fatalf("aggregate %d on %s, want %s", i, aws.ToString(r.ShardId), want)
		}
	}
	st := s.Stats()
	if st.UserRecords != 401 || st.EntriesAccepted != 5 || st.Aggregated != 4 || st.PassThrough != 1 || st.RecordBytes != int64(recBytes) {
		t.Fatalf("stats %+v", st)
	}
	if st.BodyBytes <= st.RecordBytes || st.HandlerCPU <= 0 {
		t.Fatalf("body bytes %d, record bytes %d, cpu %s", st.BodyBytes, st.RecordBytes, st.HandlerCPU)
	}
	res := v.Result()
	if !res.OK || res.Unique != 401 || res.Expected != 401 {
		t.Fatalf("verification %+v", res)
	}
	// The same again: every record is now a duplicate.
	if _, err := c.PutRecords(ctx(t), in); err != nil {
		t.Fatal(err)
	}
	if res := v.Result(); res.OK || res.Duplicates != 401 {
		t.Fatalf("after a replay: %+v", res)
	}
}

func TestLatency(t *testing.T) {
	const delay = 300 * time.Millisecond
	s, c := startSink(t, Config{Stream: "st", Latency: delay})
	t0 := time.Now()
	if _, err := c.ListShards(ctx(t), &kinesis.ListShardsInput{StreamName: aws.String("st")}); err != nil || time.Since(t0) >= delay {
		t.Fatalf("ListShards delayed (%s) or failed: %v", time.Since(t0), err)
	}
	t0 = time.Now()
	putAll(t, c, "st", []string{"a", "b"}, nil)
	if d := time.Since(t0); d < delay {
		t.Fatalf("PutRecords answered after %s", d)
	}
	if st := s.Stats(); st.HandlerCPU >= delay {
		t.Fatalf("the delay counted as CPU: %s", st.HandlerCPU)
	}
}
