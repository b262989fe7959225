package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/nsqk/nsqk/shared/logread"
	"github.com/nsqk/nsqk/shared/onfailure"
)

const failedHelp = `Reads the on-failure records of a consumer's event source mapping (the JSON Lambda sends to
the SQS queue or S3 bucket of its on-failure destination; the local event source mapping of
nsqk dev writes the same records, one per line, to .dev/*-on-failure.jsonl) and fetches the
Kinesis records each one names: from startSequenceNumber to endSequenceNumber of its shard. The
user records are printed like nsqk tail prints them (--format json or data).

For each on-failure record a line on stderr says what was found; records no longer in the stream
(past its retention period) are counted as such.

--file reads a file of records (JSON objects one after the other, or an array); "-" is stdin.
--queue-url reads an SQS queue until it is empty; messages are left in the queue unless
--delete is given (then each is deleted once all of its records were printed).

AWS settings come from the SDK's standard chain (AWS_REGION, AWS_ENDPOINT_URL_KINESIS,
AWS_ENDPOINT_URL_SQS, credentials). --stream overrides the stream named by the records' ARN.`

func failedCommand() *ffcli.Command {
	var (
		file, queueURL, stream, format string
		del                            bool
	)
	fs := flag.NewFlagSet("failed", flag.ContinueOnError)
	fs.StringVar(&file, "file", "", "file of on-failure records (- = stdin)")
	fs.StringVar(&queueURL, "queue-url", "", "SQS queue of on-failure records")
	fs.BoolVar(&del, "delete", false, "with --queue-url, delete each message once its records were printed")
	fs.StringVar(&stream, "stream", "", "stream name (default: the one in the records' streamArn)")
	fs.StringVar(&format, "format", "json", "json or data, as nsqk tail")
	return &ffcli.Command{
		Name:       "failed",
		ShortUsage: "nsqk failed (--file F | --queue-url URL [--delete]) [--stream S] [--format json|data]",
		ShortHelp:  "print the Kinesis records named by a consumer's on-failure records",
		LongHelp:   failedHelp,
		FlagSet:    fs,
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("failed: unexpected arguments %q", args)
			}
			if (file == "") == (queueURL == "") {
				return errors.New("failed: give exactly one of --file and --queue-url")
			}
			appendRec, err := formatter(format)
			if err != nil {
				return fmt.Errorf("failed: %w", err)
			}
			kc, err := kinesisClient(ctx)
			if err != nil {
				return fmt.Errorf("failed: %w", err)
			}
			f := &failedPrinter{kc: kc, stream: stream, appendRec: appendRec, out: bufio.NewWriterSize(os.Stdout, 1<<16), errOut: os.Stderr}
			if file != "" {
				in := io.Reader(os.Stdin)
				if file != "-" {
					fh, err := os.Open(file)
					if err != nil {
						return fmt.Errorf("failed: %w", err)
					}
					defer fh.Close()
					in = fh
				}
				_, err = f.fromReader(ctx, in)
			} else {
				err = f.fromQueue(ctx, queueURL, del)
			}
			return explain(err)
		},
	}
}

func formatter(format string) (func([]byte, *logread.Record) []byte, error) {
	switch format {
	case "json":
		return logread.AppendJSON, nil
	case "data":
		return logread.AppendData, nil
	}
	return nil, fmt.Errorf("--format must be json or data, not %q", format)
}

// failedPrinter fetches and prints the records of on-failure records.
type failedPrinter struct {
	kc        logread.Kinesis
	stream    string
	appendRec func([]byte, *logread.Record) []byte
	out       *bufio.Writer
	errOut    io.Writer
	buf       []byte
	// Totals over every on-failure record.
	Batches, Read, Missing, UserRecords int
}

func (f *failedPrinter) fromReader(ctx context.Context, r io.Reader) (int, error) {
	recs, err := onfailure.Parse(r)
	for _, rec := range recs {
		if ferr := f.one(ctx, rec); ferr != nil {
			return f.Batches, ferr
		}
	}
	if err != nil {
		return f.Batches, err
	}
	f.summary()
	return f.Batches, nil
}

func (f *failedPrinter) one(ctx context.Context, rec onfailure.Record) error {
	b := rec.KinesisBatchInfo
	res, err := onfailure.Fetch(ctx, f.kc, f.stream, b, func(r *logread.Record) error {
		f.UserRecords++
		f.buf = f.appendRec(f.buf[:0], r)
		_, err := f.out.Write(f.buf)
		return err
	}, func(w string) { fmt.Fprintln(f.errOut, "nsqk failed: warning:", w) })
	if ferr := f.out.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return err
	}
	f.Batches++
	f.Read += res.Read
	f.Missing += res.Missing
	line := fmt.Sprintf("%s %s..%s (%s, %d records): %d read", b.ShardID, b.StartSequenceNumber, b.EndSequenceNumber,
		rec.RequestContext.Condition, b.BatchSize, res.Read)
	switch {
	case res.ShardGone:
		line += "; the shard is no longer in the stream: every record is past the retention period"
	case res.Missing > 0:
		line += fmt.Sprintf("; %d past the retention period (no longer in the stream)", res.Missing)
	}
	fmt.Fprintln(f.errOut, line)
	return nil
}

func (f *failedPrinter) summary() {
	fmt.Fprintf(f.errOut, "%d on-failure records: %d Kinesis records read (%d user records), %d past the retention period\n",
		f.Batches, f.Read, f.UserRecords, f.Missing)
}

// fromQueue receives every message of an SQS queue once.
func (f *failedPrinter) fromQueue(ctx context.Context, url string, del bool) error {
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("AWS configuration: %w", err)
	}
	q := sqs.NewFromConfig(cfg)
	seen := map[string]bool{}
	for {
		// A long visibility timeout: a message is received once in this run.
		out, err := q.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(url), MaxNumberOfMessages: 10,
			WaitTimeSeconds: 1, VisibilityTimeout: 300})
		if err != nil {
			return fmt.Errorf("receive from %s: %w", url, err)
		}
		fresh := 0
		for _, m := range out.Messages {
			id := aws.ToString(m.MessageId)
			if seen[id] {
				continue
			}
			seen[id] = true
			fresh++
			rec, err := onfailure.ParseOne([]byte(aws.ToString(m.Body)))
			if err != nil {
				fmt.Fprintf(f.errOut, "nsqk failed: message %s is not an on-failure record: %v\n", id, err)
				continue
			}
			if err := f.one(ctx, rec); err != nil {
				return err
			}
			if del {
				if _, err := q.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(url), ReceiptHandle: m.ReceiptHandle}); err != nil {
					return fmt.Errorf("delete message %s: %w", id, err)
				}
			}
		}
		if fresh == 0 {
			f.summary()
			return nil
		}
	}
}
