package lastlocation

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/nsqk/nsqk/shared/local/emfread"
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
	f := New(Config{Store: store, Metrics: &out, Logger: quiet, FunctionName: "ll",
		Now: func() time.Time { return time.UnixMilli(1764100000500) }})
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
	f := New(Config{Store: store, Metrics: io.Discard, Logger: quiet})
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

// fakeDynamo speaks the DynamoDB JSON protocol for UpdateItem and GetItem on one table, and
// evaluates exactly the condition DynamoStore sends. It fails the test on any other action: the
// function's IAM policy grants only these two.
type fakeDynamo struct {
	t     *testing.T
	mu    sync.Mutex
	items map[string]map[string]map[string]string // user_id -> attr -> {"N"|"S": v}
}

func (f *fakeDynamo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	target := r.Header.Get("X-Amz-Target")
	var in struct {
		TableName                           string
		Key                                 map[string]map[string]string
		ConditionExpression                 string
		UpdateExpression                    string
		ExpressionAttributeNames            map[string]string
		ExpressionAttributeValues           map[string]map[string]string
		ReturnValuesOnConditionCheckFailure string
		ConsistentRead                      bool
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		f.t.Errorf("bad request: %v", err)
	}
	if in.TableName != "locations" {
		f.t.Errorf("table %q", in.TableName)
	}
	user := in.Key["user_id"]["S"]
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	switch target {
	case "DynamoDB_20120810.UpdateItem":
		if in.ConditionExpression != conditionExpr || in.ExpressionAttributeNames["#seq"] != "seq" || in.ReturnValuesOnConditionCheckFailure != "ALL_OLD" {
			f.t.Errorf("unexpected UpdateItem: %+v", in)
		}
		newSeq, _ := strconv.ParseUint(in.ExpressionAttributeValues[":seq"]["N"], 10, 64)
		if old, ok := f.items[user]; ok {
			oldSeq, _ := strconv.ParseUint(old["seq"]["N"], 10, 64)
			if oldSeq >= newSeq {
				w.WriteHeader(400)
				json.NewEncoder(w).Encode(map[string]any{
					"__type":  "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
					"message": "The conditional request failed", "Item": old})
				return
			}
		}
		item := map[string]map[string]string{"user_id": {"S": user}}
		for _, part := range strings.Split(strings.TrimPrefix(in.UpdateExpression, "SET "), ", ") {
			name, val, _ := strings.Cut(part, " = ")
			item[in.ExpressionAttributeNames[name]] = in.ExpressionAttributeValues[val]
		}
		f.items[user] = item
		io.WriteString(w, `{}`)
	case "DynamoDB_20120810.GetItem":
		if !in.ConsistentRead {
			f.t.Error("GetItem is not a consistent read")
		}
		if it, ok := f.items[user]; ok {
			json.NewEncoder(w).Encode(map[string]any{"Item": it})
			return
		}
		io.WriteString(w, `{}`)
	default:
		f.t.Errorf("action %s is not granted to the function", target)
		w.WriteHeader(400)
	}
}

func TestDynamoStoreConditionalWrites(t *testing.T) {
	fake := &fakeDynamo{t: t, items: map[string]map[string]map[string]string{}}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	c := dynamodb.New(dynamodb.Options{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String(srv.URL),
		Credentials:      credentials.NewStaticCredentialsProvider("k", "s", ""),
		RetryMaxAttempts: 1,
	})
	s := NewDynamoStore(c, "locations")
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
	got, ok, err := s.Get(ctx, "u000000001")
	if err != nil || !ok || got != l {
		t.Fatalf("get: %+v %v %v, want %+v", got, ok, err, l)
	}
	newer := l
	newer.Seq = 6
	if r, err := s.Put(ctx, newer); err != nil || !r.Applied {
		t.Fatalf("newer put: %+v %v", r, err)
	}
	if _, ok, err := s.Get(ctx, "nobody"); ok || err != nil {
		t.Fatalf("get of a missing user: %v %v", ok, err)
	}
}
