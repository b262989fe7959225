// Package onfailure reads the invocation records a Lambda event source mapping for Kinesis sends
// to its on-failure destination (SQS, SNS or S3) and fetches the Kinesis records they name. A
// record names a shard and a range of sequence numbers, not the data: the data must be read
// from the stream while it is still within the retention period.
package onfailure

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"

	"github.com/nsqk/nsqk/shared/logread"
)

// Record is the invocation record a Kinesis event source mapping sends to its on-failure
// destination, field for field as in the AWS example ("Retain discarded batch records for a
// Kinesis Data Streams event source in Lambda"): it locates the discarded records in the stream
// (shard, first and last sequence number); it does not carry their data.
type Record struct {
	RequestContext   RequestContext  `json:"requestContext"`
	ResponseContext  ResponseContext `json:"responseContext"`
	Version          string          `json:"version"`
	Timestamp        string          `json:"timestamp"`
	KinesisBatchInfo BatchInfo       `json:"KinesisBatchInfo"`
}

// RequestContext of a Record.
type RequestContext struct {
	RequestID              string `json:"requestId"`
	FunctionArn            string `json:"functionArn"`
	Condition              string `json:"condition"`
	ApproximateInvokeCount int    `json:"approximateInvokeCount"`
}

// ResponseContext of a Record: the last invocation's.
type ResponseContext struct {
	StatusCode      int    `json:"statusCode"`
	ExecutedVersion string `json:"executedVersion"`
	FunctionError   string `json:"functionError,omitempty"`
}

// BatchInfo locates the records that failed: every record of ShardID from StartSequenceNumber to
// EndSequenceNumber, both included. BatchSize is how many records that range held in the batch;
// a range AWS consolidated may include records between two discarded pieces that were processed.
type BatchInfo struct {
	ShardID                         string `json:"shardId"`
	StartSequenceNumber             string `json:"startSequenceNumber"`
	EndSequenceNumber               string `json:"endSequenceNumber"`
	ApproximateArrivalOfFirstRecord string `json:"approximateArrivalOfFirstRecord"`
	ApproximateArrivalOfLastRecord  string `json:"approximateArrivalOfLastRecord"`
	BatchSize                       int    `json:"batchSize"`
	StreamArn                       string `json:"streamArn"`
}

// Parse reads on-failure records from r: JSON objects one after the other (one per line, as the
// local event source mapping writes them, or as separate documents) or a JSON array of them.
func Parse(r io.Reader) ([]Record, error) {
	dec := json.NewDecoder(r)
	var out []Record
	for {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("on-failure record %d: %w", len(out)+1, err)
		}
		raw = bytes.TrimSpace(raw)
		if len(raw) > 0 && raw[0] == '[' {
			var recs []Record
			if err := json.Unmarshal(raw, &recs); err != nil {
				return out, fmt.Errorf("on-failure records: %w", err)
			}
			for _, rec := range recs {
				if err := rec.check(); err != nil {
					return out, err
				}
			}
			out = append(out, recs...)
			continue
		}
		rec, err := ParseOne(raw)
		if err != nil {
			return out, fmt.Errorf("on-failure record %d: %w", len(out)+1, err)
		}
		out = append(out, rec)
	}
}

// ParseOne reads one on-failure record (an SQS message body, for example).
func ParseOne(b []byte) (Record, error) {
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, err
	}
	return rec, rec.check()
}

func (r *Record) check() error {
	b := r.KinesisBatchInfo
	if b.ShardID == "" || b.StartSequenceNumber == "" || b.EndSequenceNumber == "" || b.StreamArn == "" {
		return errors.New("not a Kinesis on-failure record: KinesisBatchInfo needs shardId, startSequenceNumber, endSequenceNumber and streamArn")
	}
	return nil
}

// StreamName returns the stream's name from the record's ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME).
func (b BatchInfo) StreamName() string {
	if i := strings.LastIndex(b.StreamArn, ":stream/"); i >= 0 {
		return b.StreamArn[i+len(":stream/"):]
	}
	return b.StreamArn
}

// Result is what Fetch found for one on-failure record.
type Result struct {
	// Read is the number of Kinesis records read in [start, end].
	Read int
	// Missing is BatchSize - Read: records no longer in the stream (past the retention period,
	// or the whole shard expired).
	Missing int
	// FirstRead is the sequence number of the first record read; if it is after the batch's
	// start, the records before it are past the retention period.
	FirstRead string
	// ShardGone reports that the shard itself is no longer in the stream.
	ShardGone bool
}

// Fetch reads the Kinesis records of the batch (from its start sequence number to its end
// one, both included) from stream (its name; "" = the name in the ARN) and calls fn with each
// user record, de-aggregated as logread does. warn receives partly expanded aggregates.
func Fetch(ctx context.Context, kc logread.Kinesis, stream string, b BatchInfo, fn func(*logread.Record) error, warn func(string)) (Result, error) {
	var res Result
	if stream == "" {
		stream = b.StreamName()
	}
	it, err := kc.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{StreamName: aws.String(stream), ShardId: aws.String(b.ShardID),
		ShardIteratorType: types.ShardIteratorTypeAtSequenceNumber, StartingSequenceNumber: aws.String(b.StartSequenceNumber)})
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) && ae.ErrorCode() == "ResourceNotFoundException" {
			res.ShardGone, res.Missing = true, b.BatchSize
			return res, nil
		}
		return res, fmt.Errorf("shard %s at %s: %w", b.ShardID, b.StartSequenceNumber, err)
	}
	var x logread.Expander
	iter := it.ShardIterator
	limit := int32(min(max(b.BatchSize, 1), 10000))
	for iter != nil {
		out, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter, Limit: aws.Int32(limit)})
		if err != nil {
			return res, fmt.Errorf("shard %s: GetRecords: %w", b.ShardID, err)
		}
		for i := range out.Records {
			kr := &out.Records[i]
			seq := aws.ToString(kr.SequenceNumber)
			if logread.SeqLess(b.EndSequenceNumber, seq) {
				res.Missing = max(0, b.BatchSize-res.Read)
				return res, nil
			}
			if res.Read == 0 {
				res.FirstRead = seq
			}
			res.Read++
			n, ierr, err := x.Expand(b.ShardID, kr, nil, fn)
			if err != nil {
				return res, err
			}
			if ierr != nil && warn != nil {
				warn(fmt.Sprintf("shard %s sequence number %s: aggregate only partly expanded (%d user records before the fault): %v", b.ShardID, seq, n, ierr))
			}
			if seq == b.EndSequenceNumber {
				res.Missing = max(0, b.BatchSize-res.Read)
				return res, nil
			}
		}
		iter = out.NextShardIterator
		if len(out.Records) == 0 && aws.ToInt64(out.MillisBehindLatest) == 0 {
			break
		}
	}
	res.Missing = max(0, b.BatchSize-res.Read)
	return res, nil
}
