package esm

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

// The Kinesis event Lambda sends, field for field and in the order of the AWS example ("Example
// Kinesis record event", Lambda developer guide, with-kinesis): eventID is
// "<shard id>:<sequence number>", approximateArrivalTimestamp is Unix seconds with a fraction
// (milliseconds), data is standard base64.
type eventRecord struct {
	Kinesis           kinesisData `json:"kinesis"`
	EventSource       string      `json:"eventSource"`
	EventVersion      string      `json:"eventVersion"`
	EventID           string      `json:"eventID"`
	EventName         string      `json:"eventName"`
	InvokeIdentityArn string      `json:"invokeIdentityArn"`
	AwsRegion         string      `json:"awsRegion"`
	EventSourceARN    string      `json:"eventSourceARN"`
}

type kinesisData struct {
	KinesisSchemaVersion        string      `json:"kinesisSchemaVersion"`
	PartitionKey                string      `json:"partitionKey"`
	SequenceNumber              string      `json:"sequenceNumber"`
	Data                        []byte      `json:"data"`
	ApproximateArrivalTimestamp json.Number `json:"approximateArrivalTimestamp"`
	EncryptionType              string      `json:"encryptionType,omitempty"`
}

// EventOptions are the account-level values an event carries.
type EventOptions struct {
	Region            string // default us-east-1
	InvokeIdentityArn string // default arn:aws:iam::000000000000:role/nsqk-local
}

// BuildEvent returns the JSON Lambda would send for records of one shard of the stream
// streamARN: {"Records":[...]}.
func BuildEvent(shardID, streamARN string, recs []types.Record, o EventOptions) ([]byte, error) {
	if o.Region == "" {
		o.Region = regionOf(streamARN)
	}
	if o.InvokeIdentityArn == "" {
		o.InvokeIdentityArn = "arn:aws:iam::" + accountOf(streamARN) + ":role/nsqk-local"
	}
	out := struct {
		Records []eventRecord `json:"Records"`
	}{Records: make([]eventRecord, len(recs))}
	for i, r := range recs {
		seq := deref(r.SequenceNumber)
		enc := ""
		if r.EncryptionType != "" && r.EncryptionType != types.EncryptionTypeNone {
			enc = string(r.EncryptionType)
		}
		out.Records[i] = eventRecord{
			Kinesis: kinesisData{
				KinesisSchemaVersion:        "1.0",
				PartitionKey:                deref(r.PartitionKey),
				SequenceNumber:              seq,
				Data:                        r.Data,
				ApproximateArrivalTimestamp: epochSeconds(arrival(r)),
				EncryptionType:              enc,
			},
			EventSource:       "aws:kinesis",
			EventVersion:      "1.0",
			EventID:           shardID + ":" + seq,
			EventName:         "aws:kinesis:record",
			InvokeIdentityArn: o.InvokeIdentityArn,
			AwsRegion:         o.Region,
			EventSourceARN:    streamARN,
		}
	}
	return json.Marshal(out)
}

// epochSeconds formats t as Unix seconds with millisecond decimals, e.g. 1545084650.987.
func epochSeconds(t time.Time) json.Number {
	ms := t.UnixMilli()
	sec, frac := ms/1000, ms%1000
	if frac < 0 {
		sec, frac = sec-1, frac+1000
	}
	return json.Number(strconv.FormatInt(sec, 10) + "." + fmt.Sprintf("%03d", frac))
}

func arrival(r types.Record) time.Time {
	if r.ApproximateArrivalTimestamp == nil {
		return time.Time{}
	}
	return *r.ApproximateArrivalTimestamp
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// arn:aws:kinesis:REGION:ACCOUNT:stream/NAME
func regionOf(arn string) string {
	if p := strings.Split(arn, ":"); len(p) > 4 && p[3] != "" {
		return p[3]
	}
	return "us-east-1"
}

func accountOf(arn string) string {
	if p := strings.Split(arn, ":"); len(p) > 4 && p[4] != "" {
		return p[4]
	}
	return "000000000000"
}

// compareSeq compares Kinesis sequence numbers (decimal, no leading zeros) numerically.
func compareSeq(a, b string) int {
	if len(a) != len(b) {
		if len(a) < len(b) {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}

// partialResult interprets a function response under ReportBatchItemFailures, following the
// Lambda developer guide ("Configuring partial batch response with Kinesis Data Streams and
// Lambda", success and failure conditions):
//
//   - complete success: an empty or null batchItemFailures list, an empty or null response
//     (anything that is not an object with a non-empty batchItemFailures array);
//   - complete failure: an item with an empty or null itemIdentifier, or a wrong key name; also
//     (as LocalStack's parity-tested poller does) an identifier that is not in the batch;
//   - otherwise the checkpoint is the item with the lowest sequence number.
//
// It returns the index in seqs of the lowest reported record, -1 for complete success, and
// whole = true for a complete failure.
func partialResult(resp []byte, seqs []string) (idx int, whole bool, reason string) {
	var obj map[string]json.RawMessage
	if json.Unmarshal(resp, &obj) != nil {
		return -1, false, ""
	}
	raw, ok := obj["batchItemFailures"]
	if !ok || string(raw) == "null" {
		return -1, false, ""
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return 0, true, "batchItemFailures is not an array"
	}
	if len(items) == 0 {
		return -1, false, ""
	}
	pos := make(map[string]int, len(seqs))
	for i, s := range seqs {
		pos[s] = i
	}
	lowest := -1
	for _, it := range items {
		var item map[string]json.RawMessage
		if json.Unmarshal(it, &item) != nil {
			return 0, true, "a batchItemFailures entry is not an object"
		}
		var id string
		if json.Unmarshal(item["itemIdentifier"], &id) != nil || id == "" {
			return 0, true, "empty, null or missing itemIdentifier"
		}
		i, ok := pos[id]
		if !ok {
			return 0, true, "itemIdentifier " + id + " is not in the batch"
		}
		if lowest < 0 || compareSeq(seqs[i], seqs[lowest]) < 0 {
			lowest = i
		}
	}
	return lowest, false, ""
}
