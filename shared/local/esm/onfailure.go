package esm

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/nsqk/nsqk/shared/consumer"
)

// FailureRecord is the invocation record Lambda sends to an on-failure destination for a
// Kinesis event source (one JSON line per record in the OnFailure file).
type FailureRecord struct {
	RequestContext   RequestContext  `json:"requestContext"`
	ResponseContext  ResponseContext `json:"responseContext"`
	Version          string          `json:"version"`
	Timestamp        string          `json:"timestamp"`
	KinesisBatchInfo BatchInfo       `json:"KinesisBatchInfo"`
}

// RequestContext of a FailureRecord.
type RequestContext struct {
	RequestID              string `json:"requestId"`
	FunctionArn            string `json:"functionArn"`
	Condition              string `json:"condition"`
	ApproximateInvokeCount int    `json:"approximateInvokeCount"`
}

// ResponseContext of a FailureRecord: the last invocation's.
type ResponseContext struct {
	StatusCode      int    `json:"statusCode"`
	ExecutedVersion string `json:"executedVersion"`
	FunctionError   string `json:"functionError,omitempty"`
}

// BatchInfo locates the discarded records in the stream.
type BatchInfo struct {
	ShardID                         string `json:"shardId"`
	StartSequenceNumber             string `json:"startSequenceNumber"`
	EndSequenceNumber               string `json:"endSequenceNumber"`
	ApproximateArrivalOfFirstRecord string `json:"approximateArrivalOfFirstRecord"`
	ApproximateArrivalOfLastRecord  string `json:"approximateArrivalOfLastRecord"`
	BatchSize                       int    `json:"batchSize"`
	StreamArn                       string `json:"streamArn"`
}

const isoMillis = "2006-01-02T15:04:05.000Z"

func (m *Mapping) discard(sr *shardRun, items []item, condition string, invokes int, last invocation, log *slog.Logger) {
	first, lastRec := items[0].rec, items[len(items)-1].rec
	fr := FailureRecord{
		RequestContext: RequestContext{
			RequestID:              consumer.NewUUID(),
			FunctionArn:            consumer.FunctionARN(m.cfg.FunctionName),
			Condition:              condition,
			ApproximateInvokeCount: invokes,
		},
		ResponseContext: ResponseContext{ExecutedVersion: "$LATEST"},
		Version:         "1.0",
		Timestamp:       m.cfg.Now().UTC().Format(isoMillis),
		KinesisBatchInfo: BatchInfo{
			ShardID:                         sr.id,
			StartSequenceNumber:             aws.ToString(first.SequenceNumber),
			EndSequenceNumber:               aws.ToString(lastRec.SequenceNumber),
			ApproximateArrivalOfFirstRecord: arrival(first).UTC().Format(isoMillis),
			ApproximateArrivalOfLastRecord:  arrival(lastRec).UTC().Format(isoMillis),
			BatchSize:                       len(items),
			StreamArn:                       m.StreamARN(),
		},
	}
	if last.invoked {
		fr.ResponseContext.StatusCode = 200
		if last.errorType != "" {
			fr.ResponseContext.FunctionError = "Unhandled"
		}
	}
	log.Warn("discarding records to the on-failure destination", "condition", condition,
		"start_sequence_number", fr.KinesisBatchInfo.StartSequenceNumber, "end_sequence_number", fr.KinesisBatchInfo.EndSequenceNumber,
		"records", len(items), "invocations", invokes, "destination", m.cfg.OnFailure)
	if m.failFile != nil {
		line, _ := json.Marshal(fr)
		m.failMu.Lock()
		_, err := m.failFile.Write(append(line, '\n'))
		m.failMu.Unlock()
		if err != nil {
			log.Error("on-failure destination write failed", "error", err.Error())
		}
	}
	m.update(func(s *Stats) {
		s.OnFailureRecords += int64(len(items))
		s.OnFailureBatches++
	})
	m.markDone(sr, items)
}

// ReadOnFailure reads the invocation records of an OnFailure file.
func ReadOnFailure(path string) ([]FailureRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []FailureRecord
	dec := json.NewDecoder(bytes.NewReader(b))
	for dec.More() {
		var fr FailureRecord
		if err := dec.Decode(&fr); err != nil {
			return out, err
		}
		out = append(out, fr)
	}
	return out, nil
}
