package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/localtest"
	"github.com/nsqk/nsqk/shared/local/sqslocal"
	"github.com/nsqk/nsqk/shared/logread"
	"github.com/nsqk/nsqk/shared/redrive"
)

// failedFixture writes four records to a new stream and returns the on-failure record (AWS's
// shape) that names records 1 and 2.
func failedFixture(t *testing.T) (*kinesis.Client, string) {
	e := localtest.Kinesis(t, kinesislocal.Options{})
	kc := e.Client()
	stream := localtest.Stream(t, kc, 1)
	var seqs []string
	for i := range 4 {
		out, err := kc.PutRecord(context.Background(), &kinesis.PutRecordInput{StreamName: aws.String(stream), PartitionKey: aws.String("k"),
			Data: []byte(fmt.Sprintf("record %d", i))})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, aws.ToString(out.SequenceNumber))
	}
	line := fmt.Sprintf(`{"requestContext":{"requestId":"r","functionArn":"arn:aws:lambda:us-east-1:000000000000:function:monitor","condition":"RetryAttemptsExhausted","approximateInvokeCount":4},"responseContext":{"statusCode":200,"executedVersion":"$LATEST","functionError":"Unhandled"},"version":"1.0","timestamp":"2026-12-06T07:25:00.000Z","KinesisBatchInfo":{"shardId":"shardId-000000000000","startSequenceNumber":%q,"endSequenceNumber":%q,"approximateArrivalOfFirstRecord":"2026-12-06T07:24:50.000Z","approximateArrivalOfLastRecord":"2026-12-06T07:24:51.000Z","batchSize":2,"streamArn":"arn:aws:kinesis:us-east-1:000000000000:stream/%s"}}`,
		seqs[1], seqs[2], stream)
	return kc, line
}

func checkFailedOutput(t *testing.T, out, errOut string) {
	t.Helper()
	if out != "record 1\nrecord 2\n" {
		t.Errorf("stdout %q", out)
	}
	if !strings.Contains(errOut, "(RetryAttemptsExhausted, 2 records): 2 read\n") ||
		!strings.Contains(errOut, "1 on-failure records: 2 Kinesis records read (2 user records), 0 past the retention period") {
		t.Errorf("stderr %q", errOut)
	}
}

func TestFailedFromFile(t *testing.T) {
	kc, line := failedFixture(t)
	var out, errOut bytes.Buffer
	f := &failedPrinter{kc: kc, appendRec: logread.AppendData, out: bufio.NewWriter(&out), errOut: &errOut}
	n, err := f.fromReader(context.Background(), strings.NewReader(line+"\n"))
	if err != nil || n != 1 {
		t.Fatalf("%d records, %v", n, err)
	}
	checkFailedOutput(t, out.String(), errOut.String())
}

// TestFailedFromQueue reads the record from a real SQS implementation (fauxqs) through the SDK's
// standard configuration, as against AWS, and deletes it with --delete.
func TestFailedFromQueue(t *testing.T) {
	kc, line := failedFixture(t)
	s := localtest.SQS(t)
	sc := s.Client()
	url := localtest.Queue(t, sc)
	if _, err := sc.SendMessage(context.Background(), &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String(line)}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ENDPOINT_URL_SQS", s.Endpoint)
	t.Setenv("AWS_REGION", sqslocal.Region)
	t.Setenv("AWS_ACCESS_KEY_ID", "local")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "local")
	var out, errOut bytes.Buffer
	f := &failedPrinter{kc: kc, appendRec: logread.AppendData, out: bufio.NewWriter(&out), errOut: &errOut}
	if err := f.fromQueue(context.Background(), url, true); err != nil {
		t.Fatal(err)
	}
	f.out.Flush()
	checkFailedOutput(t, out.String(), errOut.String())
	// Received messages are invisible for a while, so count those too: --delete must remove it.
	attrs, err := sc.GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{QueueUrl: aws.String(url),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
	if err != nil {
		t.Fatal(err)
	}
	if v, nv := attrs.Attributes["ApproximateNumberOfMessages"], attrs.Attributes["ApproximateNumberOfMessagesNotVisible"]; v != "0" || nv != "0" {
		t.Fatalf("after --delete: %s visible and %s in flight, want none", v, nv)
	}
}

func TestRedriveSummaryTable(t *testing.T) {
	s := &redrive.Summary{ByReason: map[string]*redrive.Counts{
		"late_redelivery": {Redriven: 42, Present: 18},
		"too_large":       {Kept: 1, Truncated: 1},
	}}
	var b bytes.Buffer
	writeRedriveSummary(&b, s)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0], "already in the stream") ||
		strings.Join(strings.Fields(lines[1]), " ") != "late_redelivery 42 18 0 0 0" ||
		strings.Join(strings.Fields(lines[3]), " ") != "total 42 18 1 1 0" {
		t.Errorf("summary:\n%s", b.String())
	}
}
