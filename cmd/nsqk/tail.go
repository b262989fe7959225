package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/mattn/go-isatty"
	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/nsqk/nsqk/shared/bridgecmd"
	"github.com/nsqk/nsqk/shared/logread"
)

const tailHelp = `Reads a Kinesis stream back: every shard (ListShards with paging), parents before
children, so that a partition key's records come out in order across splits and merges. KPL
aggregates are expanded into their user records (with sub-sequence numbers); a record that is not
an aggregate passes through as one record; an aggregate with a key index out of range gives the
records before the fault and a warning on stderr.

--format json (default) prints one JSON object per user record, with exactly these fields:
  shard_id, sequence_number, sub_sequence_number (0 for a plain record), aggregated,
  partition_key (the user record's; the Kinesis record's for a plain one),
  explicit_hash_key (string or null), arrival_time (RFC 3339, ms, UTC),
  data_base64, and data (only when the bytes are valid UTF-8).
--format data prints the raw data of each user record followed by a newline.

Without --follow, tail reads from --from (default trim-horizon) and ends (exit 0) once every
shard has caught up with the stream's tip, or reached --to. With --follow it reads from --from
(default latest) and keeps polling (about once a second when idle), picking up child shards
after a reshard; SIGINT or SIGTERM end it (exit 0).

--key reads only the shards whose hash key range holds MD5(key) and prints only user records
with that key. --shard reads only the named shards (not their children).

Read limits are honoured: throttling backs off, an expired iterator is renewed after the last
sequence number read; no record is printed twice or skipped.

Endpoint, region and credentials come from the AWS SDK's standard chain (AWS_REGION,
AWS_ENDPOINT_URL_KINESIS, AWS_PROFILE, ...). A progress line (records/s, shards done/total,
how far behind the tip) goes to stderr every 2 s when stderr is a terminal; --quiet silences it.`

// selection is the part of the flags tail, replay and failed share.
type selection struct {
	stream, from, to string
	follow           bool
	shards, keys     stringList
	quiet            bool
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func (s *selection) register(fs *flag.FlagSet) {
	fs.StringVar(&s.stream, "stream", "", "stream name or ARN (required)")
	fs.StringVar(&s.from, "from", "", "trim-horizon, latest, an RFC 3339 time or a duration ago such as 15m (default trim-horizon; latest with --follow)")
	fs.BoolVar(&s.follow, "follow", false, "keep reading new records and child shards until SIGINT/SIGTERM")
	fs.StringVar(&s.to, "to", "", "end each shard at the first record that arrived after this RFC 3339 time (or duration ago)")
	fs.Var(&s.shards, "shard", "read only this shard (repeatable)")
	fs.Var(&s.keys, "key", "read only records with this partition key (repeatable)")
	fs.BoolVar(&s.quiet, "quiet", false, "no progress line on stderr")
}

// options turns the flags into reader options.
func (s *selection) options(now time.Time) (logread.Options, error) {
	o := logread.Options{Stream: s.stream, Follow: s.follow, Shards: s.shards, Keys: s.keys}
	if s.stream == "" {
		return o, errors.New("--stream is required")
	}
	from := s.from
	if from == "" {
		from = "trim-horizon"
		if s.follow {
			from = "latest"
		}
	}
	var err error
	if o.From, err = logread.ParsePosition(from, now); err != nil {
		return o, fmt.Errorf("--from: %w", err)
	}
	if s.to != "" {
		if o.To, err = logread.ParseTime(s.to, now); err != nil {
			return o, fmt.Errorf("--to: %w", err)
		}
		if o.From.Type == "AT_TIMESTAMP" && o.To.Before(o.From.At) {
			return o, fmt.Errorf("--to %s is before --from %s", o.To.Format(time.RFC3339), o.From)
		}
	}
	for _, k := range s.keys {
		if k == "" {
			return o, errors.New("--key: a partition key is 1 to 256 characters")
		}
	}
	return o, nil
}

func tailCommand() *ffcli.Command {
	var (
		sel    selection
		format string
	)
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	sel.register(fs)
	fs.StringVar(&format, "format", "json", "json (one object per user record) or data (raw data, one record per line)")
	return &ffcli.Command{
		Name:       "tail",
		ShortUsage: "nsqk tail --stream NAME|ARN [--from P] [--to T] [--follow] [--shard ID]... [--key K]... [--format json|data] [--quiet]",
		ShortHelp:  "print a stream's records in order, de-aggregated",
		LongHelp:   tailHelp,
		FlagSet:    fs,
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("tail: unexpected arguments %q", args)
			}
			appendRec, err := formatter(format)
			if err != nil {
				return fmt.Errorf("tail: %w", err)
			}
			o, err := sel.options(time.Now())
			if err != nil {
				return fmt.Errorf("tail: %w", err)
			}
			kc, err := kinesisClient(ctx)
			if err != nil {
				return fmt.Errorf("tail: %w", err)
			}
			_, err = runTail(ctx, kc, o, appendRec, os.Stdout, os.Stderr, !sel.quiet && isTerminal(os.Stderr))
			return err
		},
	}
}

// runTail reads with o and writes each user record with appendRec to out. Warnings go to errOut,
// and so does a progress line every 2 s when progress is set.
func runTail(ctx context.Context, kc logread.Kinesis, o logread.Options, appendRec func([]byte, *logread.Record) []byte,
	out, errOut io.Writer, progress bool) (logread.Stats, error) {
	bw := bufio.NewWriterSize(out, 1<<16)
	var buf []byte
	o.Warn = func(msg string) { fmt.Fprintln(errOut, "nsqk tail: warning:", msg) }
	// Output is flushed after every page, so that --follow shows records as they arrive.
	o.Flush = bw.Flush
	r, err := logread.New(kc, o)
	if err != nil {
		return logread.Stats{}, err
	}
	if progress {
		stop := startProgress(errOut, "tail", r)
		defer stop()
	}
	err = r.Run(ctx, func(rec *logread.Record) error {
		buf = appendRec(buf[:0], rec)
		_, err := bw.Write(buf)
		return err
	})
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	return r.Stats(), explain(err)
}

// startProgress prints a progress line to w every 2 s until the returned function is called.
func startProgress(w io.Writer, what string, r *logread.Reader) func() {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		last, lastAt := r.Stats(), time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				s := r.Stats()
				rate := float64(s.UserRecords-last.UserRecords) / now.Sub(lastAt).Seconds()
				fmt.Fprintf(w, "%s: %d records (%.0f/s), shards %d/%d done, %s behind the tip\n",
					what, s.UserRecords, rate, s.ShardsDone, s.ShardsTotal, s.Behind.Round(time.Second))
				last, lastAt = s, now
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

func isTerminal(f *os.File) bool {
	return isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())
}

// kinesisClient builds the Kinesis client from the SDK's standard chain.
func kinesisClient(ctx context.Context) (*kinesis.Client, error) {
	kc, err := bridgecmd.KinesisClient(ctx, 8)
	if err != nil {
		return nil, fmt.Errorf("AWS configuration: %w", err)
	}
	if kc.Options().Region == "" {
		return nil, errors.New("no AWS region: set AWS_REGION (or a profile's region)")
	}
	// Ask for credentials now: the SDK would only say so deep inside the first call's error.
	creds := kc.Options().Credentials
	if creds == nil {
		return nil, errors.New(noCredentials)
	}
	if _, err := creds.Retrieve(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", noCredentials, err)
	}
	return kc, nil
}

const noCredentials = "no AWS credentials: the SDK's standard chain found none (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with an IAM role)"

// explain turns the SDK's errors that users meet first into plain sentences.
func explain(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, logread.ErrStreamNotFound):
		return fmt.Errorf("%w (check the name, AWS_REGION and AWS_ENDPOINT_URL_KINESIS)", err)
	}
	return err
}
