package lastlocation

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/nsqk/nsqk/shared/consumer"
	"github.com/nsqk/nsqk/shared/local/emfread"
	"github.com/nsqk/nsqk/shared/local/localtest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func msg(user string, seq uint64, ts int64) []byte {
	return []byte(fmt.Sprintf(`{"user_id":%q,"seq":%d,"ts":%d,"lat":48.1,"lon":11.5,"acc":5,"speed":1.5,"heading":90}`, user, seq, ts))
}

func rec(seq string, data []byte) events.KinesisEventRecord {
	return events.KinesisEventRecord{
		EventID:        "shardId-000000000001:" + seq,
		EventSourceArn: "arn:aws:kinesis:us-east-1:000000000000:stream/s",
		Kinesis: events.KinesisRecord{SequenceNumber: seq, PartitionKey: "p", Data: data,
			ApproximateArrivalTimestamp: events.SecondsEpochTime{Time: time.UnixMilli(1764100000000)}},
	}
}

func TestLastLocationNeverGoesBackInTime(t *testing.T) {
	store := NewMemoryStore()
	var out bytes.Buffer
	f := New(Config{Store: store, FunctionSetup: consumer.FunctionSetup{Name: "ll", Metrics: &out, Logger: quiet,
		Now: func() time.Time { return time.UnixMilli(1764100000500) }}})
	ev := events.KinesisEvent{Records: []events.KinesisEventRecord{
		rec("1", msg("u000000001", 1, 1764100000000)),
		rec("2", msg("u000000002", 7, 1764100000001)),
		rec("3", msg("u000000001", 3, 1764100000002)),
		rec("4", msg("u000000001", 2, 1764100000003)), // older than the stored 3: must not win
		rec("5", msg("u000000002", 7, 1764100000004)), // a replay
	}}
	resp, err := f.Handle(context.Background(), ev)
	if err != nil || len(resp.BatchItemFailures) != 0 {
		t.Fatalf("%+v %v", resp, err)
	}
	l, ok, _ := store.Get(context.Background(), "u000000001")
	if !ok || l.Seq != 3 || l.SequenceNumber != "3" || l.ShardID != "shardId-000000000001" || l.UpdatedAt != 1764100000500 {
		t.Fatalf("u000000001 = %+v", l)
	}
	if s := f.Stats(); s != (Stats{Applied: 3, Stale: 1, Duplicates: 1}) {
		t.Fatalf("stats %+v", s)
	}
	d, err := emfread.Decode(bytes.TrimSpace(out.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if d.Dimensions["Function"] != "ll" || d.Metrics["Stale"].Total() != 1 || d.Metrics["Records"].Total() != 5 || d.Metrics["E2ELatency"].Count != 5 {
		t.Fatalf("metrics %+v", d.Metrics)
	}
}

func TestInvalidMessageFailsItsRecord(t *testing.T) {
	store := NewMemoryStore()
	f := New(Config{Store: store, FunctionSetup: consumer.FunctionSetup{Metrics: io.Discard, Logger: quiet}})
	for _, bad := range [][]byte{[]byte("not json"), []byte(`{"seq":1}`), []byte(`{"user_id":"u000000009"}`)} {
		ev := events.KinesisEvent{Records: []events.KinesisEventRecord{
			rec("10", msg("u000000001", 1, 1)), rec("11", bad), rec("12", msg("u000000001", 2, 2)),
		}}
		resp, _ := f.Handle(context.Background(), ev)
		if len(resp.BatchItemFailures) != 1 || resp.BatchItemFailures[0].ItemIdentifier != "11" {
			t.Fatalf("%s: %+v", bad, resp)
		}
	}
	if l, _, _ := store.Get(context.Background(), "u000000001"); l.Seq != 1 {
		t.Fatalf("the record after the failure was processed: %+v", l)
	}
}

func TestInvalidMessageIsDeadLetteredAndTheBatchGoesOn(t *testing.T) {
	store := NewMemoryStore()
	dl := &consumer.MemoryDeadLetters{}
	f := New(Config{Store: store, FunctionSetup: consumer.FunctionSetup{Metrics: io.Discard, Logger: quiet, DeadLetters: dl}})
	ev := events.KinesisEvent{Records: []events.KinesisEventRecord{
		rec("10", msg("u000000001", 1, 1)), rec("11", []byte(`{"user_id":"u000000009"}`)), rec("12", msg("u000000001", 2, 2)),
	}}
	resp, err := f.Handle(context.Background(), ev)
	if err != nil || len(resp.BatchItemFailures) != 0 {
		t.Fatalf("%+v %v", resp, err)
	}
	if l, _, _ := store.Get(context.Background(), "u000000001"); l.Seq != 2 {
		t.Fatalf("the record after the invalid one was not processed: %+v", l)
	}
	if l := dl.Letters(); len(l) != 1 || l[0].SequenceNumber != "11" || !strings.Contains(l[0].Reason, ErrInvalid.Error()) {
		t.Fatalf("dead letters %+v", l)
	}
	if s := f.Stats(); s != (Stats{Applied: 2, Invalid: 1}) {
		t.Fatalf("stats %+v", s)
	}
}

// itemOnConditionFailure wraps a DynamoDB client the way DynamoDB itself answers
// ReturnValuesOnConditionCheckFailure=ALL_OLD, which dynalite ignores: a failed UpdateItem's
// ConditionalCheckFailedException carries the stored item (read here from dynalite, after the
// failure). It counts GetItem calls so that a test can see the store not reading again.
type itemOnConditionFailure struct {
	*dynamodb.Client
	gets atomic.Int64
}

func (w *itemOnConditionFailure) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	out, err := w.Client.UpdateItem(ctx, in, optFns...)
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) && in.ReturnValuesOnConditionCheckFailure == types.ReturnValuesOnConditionCheckFailureAllOld {
		got, gerr := w.Client.GetItem(ctx, &dynamodb.GetItemInput{TableName: in.TableName, Key: in.Key, ConsistentRead: aws.Bool(true)})
		if gerr != nil {
			return nil, gerr
		}
		ccf.Item = got.Item
	}
	return out, err
}

func (w *itemOnConditionFailure) GetItem(ctx context.Context, in *dynamodb.GetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	w.gets.Add(1)
	return w.Client.GetItem(ctx, in, optFns...)
}

// TestDynamoStoreConditionalWrites runs the store against dynalite, which does not implement
// ReturnValuesOnConditionCheckFailure (a rejected write comes back without the stored item), and
// against the same dynalite with the stored item attached as DynamoDB attaches it: the store
// reports the stored seq of a rejected write either way, and reads it back only when the
// exception lacks it.
func TestDynamoStoreConditionalWrites(t *testing.T) {
	d := localtest.Dynamo(t)
	c := d.Client(func(o *dynamodb.Options) { o.RetryMaxAttempts = 1 })
	for _, tc := range []struct {
		name    string
		api     func() (DynamoAPI, func() int64)
		rereads bool
	}{
		{"dynalite", func() (DynamoAPI, func() int64) { return c, nil }, true},
		{"item on condition failure", func() (DynamoAPI, func() int64) {
			w := &itemOnConditionFailure{Client: c}
			return w, w.gets.Load
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api, gets := tc.api()
			s := NewDynamoStore(api, localtest.Table(t, c, "user_id"))
			ctx := context.Background()
			l := Location{UserID: "u000000001", Seq: 5, TS: 1764100000000, Lat: 48.137154, Lon: 11.576124, Accuracy: 4.5,
				Speed: 1.25, Heading: 270, ShardID: "shardId-000000000002", SequenceNumber: "4959", SubSequence: 3, UpdatedAt: 1764100000100}
			if r, err := s.Put(ctx, l); err != nil || !r.Applied {
				t.Fatalf("first put: %+v %v", r, err)
			}
			older := l
			older.Seq, older.Lat = 4, 0
			if r, err := s.Put(ctx, older); err != nil || r.Applied || r.StoredSeq != 5 {
				t.Fatalf("older put: %+v %v", r, err)
			}
			if r, err := s.Put(ctx, l); err != nil || r.Applied || r.StoredSeq != 5 {
				t.Fatalf("replayed put: %+v %v", r, err)
			}
			if gets != nil && gets() != 0 {
				t.Fatalf("%d GetItem calls although the exception carried the stored item", gets())
			}
			got, ok, err := s.Get(ctx, "u000000001")
			if err != nil || !ok || got != l {
				t.Fatalf("get: %+v %v %v, want %+v", got, ok, err, l)
			}
			newer := l
			newer.Seq = 6
			if r, err := s.Put(ctx, newer); err != nil || !r.Applied {
				t.Fatalf("newer put: %+v %v", r, err)
			}
			if got, _, _ := s.Get(ctx, "u000000001"); got.Seq != 6 {
				t.Fatalf("after the newer put: %+v", got)
			}
			if _, ok, err := s.Get(ctx, "nobody"); ok || err != nil {
				t.Fatalf("get of a missing user: %v %v", ok, err)
			}
		})
	}
}

// TestFunctionOnDynalite runs the lastlocation function on the DynamoDB store: a user never goes
// back in time, replays and stale updates are counted.
func TestFunctionOnDynalite(t *testing.T) {
	d := localtest.Dynamo(t)
	c := d.Client()
	store := NewDynamoStore(c, localtest.Table(t, c, "user_id"))
	f := New(Config{Store: store, FunctionSetup: consumer.FunctionSetup{Metrics: io.Discard, Logger: quiet}})
	ev := events.KinesisEvent{Records: []events.KinesisEventRecord{
		rec("1", msg("u000000001", 1, 1764100000000)),
		rec("2", msg("u000000001", 3, 1764100000002)),
		rec("3", msg("u000000001", 2, 1764100000003)),
		rec("4", msg("u000000001", 3, 1764100000004)),
	}}
	resp, err := f.Handle(context.Background(), ev)
	if err != nil || len(resp.BatchItemFailures) != 0 {
		t.Fatalf("%+v %v", resp, err)
	}
	l, ok, err := store.Get(context.Background(), "u000000001")
	if err != nil || !ok || l.Seq != 3 || l.SequenceNumber != "2" {
		t.Fatalf("stored %+v %v %v", l, ok, err)
	}
	if s := f.Stats(); s != (Stats{Applied: 2, Stale: 1, Duplicates: 1}) {
		t.Fatalf("stats %+v", s)
	}
}

func TestStoreFromEnv(t *testing.T) {
	t.Setenv(TableEnv, "")
	if s, err := StoreFromEnv(consumer.Env{Local: true}); err != nil {
		t.Fatal(err)
	} else if _, ok := s.(*MemoryStore); !ok {
		t.Fatalf("-invoke without a table: %T", s)
	}
	if _, err := StoreFromEnv(consumer.Env{}); err == nil || !strings.Contains(err.Error(), TableEnv) {
		t.Fatalf("in Lambda without a table: %v", err)
	}
	t.Setenv(TableEnv, "locations")
	if s, err := StoreFromEnv(consumer.Env{Setup: consumer.FunctionSetup{Logger: quiet}}); err != nil {
		t.Fatal(err)
	} else if d, ok := s.(*DynamoStore); !ok || d.table != "locations" {
		t.Fatalf("with a table: %#v", s)
	}
}
