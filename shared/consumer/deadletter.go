package consumer

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// DeadLetterQueueEnv names the environment variable holding the URL of the function's
// dead-letter queue (SQS); without it, a permanent error stops the batch like any other.
const DeadLetterQueueEnv = "NSQK_DEAD_LETTER_QUEUE_URL"

// PermanentError marks a handler error as a property of the record itself (it would fail the
// same way on every retry: an unparseable payload, a schema the function does not know), as
// opposed to a transient one (a throttled table, a network error).
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as permanent: the processor sends that one user record to the function's
// dead-letter queue and goes on with the next, instead of stopping the batch. Permanent(nil) is
// nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err (or an error it wraps) is a PermanentError.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// DeadLetter is one user record a handler failed permanently, with where it came from and why.
// Its JSON form uses the field names of `nsqk tail --format json` plus reason and
// dead_lettered_at; data_base64 holds the user record's exact bytes.
type DeadLetter struct {
	Reason            string  `json:"reason"`
	EventSourceARN    string  `json:"event_source_arn"`
	ShardID           string  `json:"shard_id"`
	SequenceNumber    string  `json:"sequence_number"`
	SubSequenceNumber int     `json:"sub_sequence_number"`
	Aggregated        bool    `json:"aggregated"`
	PartitionKey      string  `json:"partition_key"`
	ExplicitHashKey   *string `json:"explicit_hash_key"`
	ArrivalTime       string  `json:"arrival_time"` // RFC 3339, milliseconds
	DataBase64        string  `json:"data_base64"`
	DeadLetteredAt    string  `json:"dead_lettered_at"` // RFC 3339, milliseconds
}

const rfc3339Millis = "2006-01-02T15:04:05.000Z07:00"

// NewDeadLetter describes r, failed for reason, at time now.
func NewDeadLetter(r Record, reason error, now time.Time) DeadLetter {
	d := DeadLetter{
		Reason: reason.Error(), EventSourceARN: r.EventSourceARN, ShardID: r.ShardID,
		SequenceNumber: r.SequenceNumber, SubSequenceNumber: r.SubSequence, Aggregated: r.Aggregated,
		PartitionKey: r.PartitionKey, ArrivalTime: r.ArrivalTime.UTC().Format(rfc3339Millis),
		DataBase64: base64.StdEncoding.EncodeToString(r.Data), DeadLetteredAt: now.UTC().Format(rfc3339Millis),
	}
	if r.ExplicitHashKey != "" {
		ehk := r.ExplicitHashKey
		d.ExplicitHashKey = &ehk
	}
	return d
}

// DeadLetterQueue receives the user records a handler failed permanently. Send returns nil only
// once the record is stored: on an error the processor stops the batch at that record (a record
// is never dropped because its dead-lettering failed).
type DeadLetterQueue interface {
	Send(ctx context.Context, d DeadLetter) error
}

// SQSAPI is the part of the SQS client SQSDeadLetters uses: exactly the action a function's IAM
// policy must grant on its dead-letter queue (sqs:SendMessage; plus kms:GenerateDataKey and
// kms:Decrypt on the queue's key when it is encrypted with a customer managed key).
type SQSAPI interface {
	SendMessage(ctx context.Context, in *sqs.SendMessageInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
}

// SQSDeadLetters sends each dead letter as one SQS message: the JSON of DeadLetter as the body,
// and reason, shard_id, sequence_number and sub_sequence_number as message attributes too (to
// look at a queue without parsing bodies). A body over the queue's maximum message size (1 MiB
// at most) is refused by SQS: that record then stops the batch as a transient failure, and
// after the mapping's retries its Kinesis record goes to the on-failure destination.
type SQSDeadLetters struct {
	c   SQSAPI
	url string
}

// NewSQSDeadLetters returns a DeadLetterQueue sending to the queue at url.
func NewSQSDeadLetters(c SQSAPI, url string) *SQSDeadLetters { return &SQSDeadLetters{c: c, url: url} }

// URL returns the queue's URL.
func (q *SQSDeadLetters) URL() string { return q.url }

// Send implements DeadLetterQueue.
func (q *SQSDeadLetters) Send(ctx context.Context, d DeadLetter) error {
	d.Reason = sqsText(d.Reason, 16<<10)
	body, err := json.Marshal(d)
	if err != nil {
		return err
	}
	str := func(v string) types.MessageAttributeValue {
		return types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
	}
	_, err = q.c.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl:    aws.String(q.url),
		MessageBody: aws.String(string(body)),
		MessageAttributes: map[string]types.MessageAttributeValue{
			"reason":              str(sqsText(d.Reason, 1024)),
			"shard_id":            str(d.ShardID),
			"sequence_number":     str(d.SequenceNumber),
			"sub_sequence_number": {DataType: aws.String("Number"), StringValue: aws.String(strconv.Itoa(d.SubSequenceNumber))},
		},
	})
	return err
}

// sqsText keeps s to the characters SQS accepts in a message attribute (XML 1.0's: tab, newline,
// carriage return, U+0020..U+D7FF, U+E000..U+FFFD, U+10000..) and to at most max bytes: an error
// text may carry bytes of the record, and a refused attribute would fail the dead-lettering.
func sqsText(s string, max int) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "?") {
		if !(r == '\t' || r == '\n' || r == '\r' || r >= 0x20 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000) {
			r = '?'
		}
		if b.Len()+len(string(r)) > max {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// MemoryDeadLetters is an in-memory DeadLetterQueue (tests and local runs). Safe for concurrent
// use.
type MemoryDeadLetters struct {
	mu sync.Mutex
	l  []DeadLetter
}

// Send implements DeadLetterQueue.
func (q *MemoryDeadLetters) Send(_ context.Context, d DeadLetter) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.l = append(q.l, d)
	return nil
}

// Letters returns a copy of what was sent, in order.
func (q *MemoryDeadLetters) Letters() []DeadLetter {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]DeadLetter(nil), q.l...)
}
