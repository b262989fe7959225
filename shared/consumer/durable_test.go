package consumer

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/google/go-cmp/cmp"

	"github.com/nsqk/nsqk/shared/emf"
	"github.com/nsqk/nsqk/shared/local/emfread"
	"github.com/nsqk/nsqk/shared/local/localtest"
	"github.com/nsqk/nsqk/shared/local/sqslocal"
)

func dynaliteCheckpoints(t *testing.T, retention time.Duration) (*DynamoCheckpoints, *dynamodb.Client) {
	t.Helper()
	c := localtest.Dynamo(t).Client()
	return NewDynamoCheckpoints(c, localtest.Table(t, c, "id"), "orders", retention), c
}

func TestDynamoCheckpointsOnDynalite(t *testing.T) {
	s, c := dynaliteCheckpoints(t, 48*time.Hour)
	now := time.Unix(1764100000, 0)
	s.now = func() time.Time { return now }
	ctx := context.Background()
	const shard, seq = "shardId-000000000002", "49667874840842633204508412862208444494450743854959165571"
	load := func() int {
		t.Helper()
		done, err := s.Load(ctx, shard, seq)
		if err != nil {
			t.Fatal(err)
		}
		return done
	}
	if d := load(); d != 0 {
		t.Fatalf("unknown aggregate: done %d", d)
	}
	for _, step := range []struct{ save, want int }{{3, 3}, {2, 3}, {3, 3}, {7, 7}} {
		if err := s.Save(ctx, shard, seq, step.save); err != nil {
			t.Fatalf("save %d: %v", step.save, err)
		}
		if d := load(); d != step.want {
			t.Fatalf("after saving %d: done %d, want %d (done only moves upward)", step.save, d, step.want)
		}
	}
	// Another function on the same stream and table keeps its own progress.
	other := NewDynamoCheckpoints(c, s.Table(), "monitor", 48*time.Hour)
	if d, err := other.Load(ctx, shard, seq); err != nil || d != 0 {
		t.Fatalf("another function reads %d %v", d, err)
	}
	// The item as the table holds it: key function/shard/sequence number, done, ttl.
	out, err := c.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.Table()),
		Key: map[string]types.AttributeValue{"id": &types.AttributeValueMemberS{Value: "orders/" + shard + "/" + seq}}, ConsistentRead: aws.Bool(true)})
	if err != nil || out.Item == nil {
		t.Fatalf("item: %v %v", out, err)
	}
	wantTTL := now.Add(48*time.Hour + 24*time.Hour).Unix()
	if v := out.Item["ttl"].(*types.AttributeValueMemberN).Value; v != strconv.FormatInt(wantTTL, 10) {
		t.Fatalf("ttl %s, want %d (retention 48 h + 24 h)", v, wantTTL)
	}
	if err := s.Save(ctx, shard, seq, 0); err != nil {
		t.Fatal(err)
	}
	out, err = c.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.Table()),
		Key: map[string]types.AttributeValue{"id": &types.AttributeValueMemberS{Value: "orders/" + shard + "/" + seq}}, ConsistentRead: aws.Bool(true)})
	if err != nil || out.Item != nil {
		t.Fatalf("finished aggregate still stored: %v %v", out.Item, err)
	}
	// Entries are per aggregate: another sequence number of the shard is independent.
	if err := s.Save(ctx, shard, "1", 5); err != nil {
		t.Fatal(err)
	}
	if d := load(); d != 0 {
		t.Fatalf("deleted aggregate reads %d", d)
	}
}

func TestDynamoCheckpointsConcurrentSavesKeepTheHighest(t *testing.T) {
	s, _ := dynaliteCheckpoints(t, 0)
	if s.ttl != MaxStreamRetention+24*time.Hour {
		t.Fatalf("ttl without a retention: %v", s.ttl)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := 1; i <= 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.Save(ctx, "shardId-000000000000", "77", i)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if d, err := s.Load(ctx, "shardId-000000000000", "77"); err != nil || d != 40 {
		t.Fatalf("done %d %v, want 40", d, err)
	}
}

// TestCheckpointsOnDynaliteSkipAcrossProcessors is the redelivery case with every attempt on a
// new Processor (a new function instance) sharing the table.
func TestCheckpointsOnDynaliteSkipAcrossProcessors(t *testing.T) {
	store, _ := dynaliteCheckpoints(t, 24*time.Hour)
	ev := mixedEvent(t)
	failures := map[int]bool{2: true, 4: true}
	calls := map[string]int{}
	h := &recorder{failAt: func(r Record) error {
		if r.SequenceNumber == "200" && failures[r.SubSequence] {
			delete(failures, r.SubSequence)
			return errors.New("transient")
		}
		return nil
	}}
	delivery := ev
	for attempt := 1; ; attempt++ {
		if attempt > 5 {
			t.Fatal("never succeeded")
		}
		p := NewProcessor(h.handle, WithLogger(quiet), WithCheckpointStore(store))
		resp, _ := p.Handle(context.Background(), delivery)
		for _, s := range h.take() {
			calls[fmt.Sprint(s.Seq, "/", s.Sub)]++
		}
		if len(resp.BatchItemFailures) == 0 {
			break
		}
		delivery = redeliver(ev, resp.BatchItemFailures[0].ItemIdentifier)
	}
	want := map[string]int{"100/0": 1, "200/0": 1, "200/1": 1, "200/2": 1, "200/3": 1, "200/4": 1, "300/0": 1}
	if d := cmp.Diff(want, calls); d != "" {
		t.Fatalf("each user record must be handled exactly once (-want +got):\n%s", d)
	}
	if d, err := store.Load(context.Background(), "shardId-000000000003", "200"); err != nil || d != 0 {
		t.Fatalf("entry left after the aggregate finished: %d %v", d, err)
	}
}

func TestPermanentIsErrorsAsAble(t *testing.T) {
	base := errors.New("bad payload")
	err := fmt.Errorf("handler: %w", Permanent(base))
	var p *PermanentError
	if !errors.As(err, &p) || !IsPermanent(err) || !errors.Is(err, base) || p.Err != base {
		t.Fatalf("%v", err)
	}
	if IsPermanent(base) || Permanent(nil) != nil {
		t.Fatal("a plain error is not permanent; Permanent(nil) is nil")
	}
}

// poisonEvent: plain, an aggregate of 5 whose user record 2 is poison, plain.
func poisonEvent(t *testing.T) events.KinesisEvent {
	const sh = "shardId-000000000001"
	return events.KinesisEvent{Records: []events.KinesisEventRecord{
		kinesisRecord(sh, "100", "p1", []byte("plain-1")),
		kinesisRecord(sh, "200", "a", aggregate(t,
			userRec{"u1", "", "agg-0"}, userRec{"u2", "", "agg-1"}, userRec{"u1", "170141183460469231731687303715884105728", "POISON\x00\xff"},
			userRec{"u3", "", "agg-3"}, userRec{"u2", "", "agg-4"})),
		kinesisRecord(sh, "300", "p2", []byte("plain-2")),
	}}
}

func poisonHandler() *recorder {
	return &recorder{failAt: func(r Record) error {
		if len(r.Data) >= 6 && string(r.Data[:6]) == "POISON" {
			return Permanent(errors.New("not a known message"))
		}
		return nil
	}}
}

func TestPermanentErrorSendsTheRecordToSQSAndGoesOn(t *testing.T) {
	srv := localtest.SQS(t)
	c := srv.Client()
	url := localtest.Queue(t, c)
	h := poisonHandler()
	var out syncBuffer
	reg := emf.New(emf.Config{Namespace: Namespace, Output: &out})
	now := time.UnixMilli(1764100005000)
	p := NewProcessor(h.handle, WithLogger(quiet), WithDeadLetterQueue(NewSQSDeadLetters(c, url)),
		WithMetrics(reg, nil), WithClock(func() time.Time { return now }))
	resp := invokeJSON(t, p, mustJSON(t, poisonEvent(t)))
	if len(resp.BatchItemFailures) != 0 {
		t.Fatalf("%+v", resp)
	}
	var order []string
	for _, s := range h.take() {
		order = append(order, s.Data)
	}
	if d := cmp.Diff([]string{"plain-1", "agg-0", "agg-1", "agg-3", "agg-4", "plain-2"}, order); d != "" {
		t.Fatalf("every other user record processed once, in order (-want +got):\n%s", d)
	}
	msgs, err := sqslocal.Drain(context.Background(), c, url)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("%d messages, %v", len(msgs), err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(aws.ToString(msgs[0].Body)), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"reason": "permanent: not a known message", "event_source_arn": "arn:aws:kinesis:us-east-1:000000000000:stream/s",
		"shard_id": "shardId-000000000001", "sequence_number": "200", "sub_sequence_number": 2.0, "aggregated": true,
		"partition_key": "u1", "explicit_hash_key": "170141183460469231731687303715884105728",
		"arrival_time": "2025-11-25T19:46:40.000Z", "data_base64": base64.StdEncoding.EncodeToString([]byte("POISON\x00\xff")),
		"dead_lettered_at": "2025-11-25T19:46:45.000Z",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("dead letter (-want +got):\n%s", d)
	}
	if a := msgs[0].MessageAttributes; aws.ToString(a["sub_sequence_number"].StringValue) != "2" || aws.ToString(a["shard_id"].StringValue) != "shardId-000000000001" {
		t.Fatalf("attributes %+v", a)
	}
	d, err := emfread.Decode(out.trimmed())
	if err != nil {
		t.Fatal(err)
	}
	if d.Metrics["DeadLetteredRecords"].Total() != 1 || d.Metrics["Records"].Total() != 6 || d.Metrics["Failures"].Total() != 0 {
		t.Fatalf("metrics %+v", d.Metrics)
	}
}

func TestFailingDeadLetterQueueStopsAndReports(t *testing.T) {
	srv := localtest.SQS(t)
	c := srv.Client(func(o *sqs.Options) { o.RetryMaxAttempts = 1 })
	missing := srv.Endpoint + "/123456789012/no-such-queue"
	h := poisonHandler()
	store := NewMemoryCheckpoints()
	p := NewProcessor(h.handle, WithLogger(quiet), WithCheckpointStore(store), WithDeadLetterQueue(NewSQSDeadLetters(c, missing)))
	ev := poisonEvent(t)
	resp := invokeJSON(t, p, mustJSON(t, ev))
	if len(resp.BatchItemFailures) != 1 || resp.BatchItemFailures[0].ItemIdentifier != "200" {
		t.Fatalf("want the aggregate reported: %+v", resp)
	}
	if done, _ := store.Load(context.Background(), "shardId-000000000001", "200"); done != 2 {
		t.Fatalf("checkpoint %d, want 2 (the poison record is not past)", done)
	}
	if n := len(h.take()); n != 3 {
		t.Fatalf("%d records handled before stopping, want 3", n)
	}
}

func TestPermanentWithoutDeadLetterQueueStops(t *testing.T) {
	h := poisonHandler()
	p := NewProcessor(h.handle, WithLogger(quiet))
	resp, err := p.Handle(context.Background(), poisonEvent(t))
	if err != nil || len(resp.BatchItemFailures) != 1 || resp.BatchItemFailures[0].ItemIdentifier != "200" {
		t.Fatalf("%+v %v", resp, err)
	}
	if n := len(h.take()); n != 3 {
		t.Fatalf("%d records handled, want 3", n)
	}
}

func TestSQSTextKeepsWhatSQSAccepts(t *testing.T) {
	if got := sqsText("a\x00b\xffc\u00e9\ufffe", 100); got != "a?b?c\u00e9?" {
		t.Fatalf("%q", got)
	}
	if got := sqsText("\u00e9\u00e9\u00e9", 5); got != "\u00e9\u00e9" {
		t.Fatalf("cut inside a character: %q", got)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type syncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *syncBuffer) trimmed() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := append([]byte(nil), s.b...)
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

var _ io.Writer = (*syncBuffer)(nil)
