package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/nsqk/nsqk/shared/logread"
	"github.com/nsqk/nsqk/shared/replay"
)

const replayHelp = `Reads a Kinesis stream back like nsqk tail (same --stream, --from, --to, --shard, --key
selection; parents before children, aggregates expanded) and publishes each user record's data
to an NSQ topic, in stream order per shard, in MPUB batches. Use it to warm a cache service that
consumes NSQ, feed a new consumer, or re-run history through a fixed service.

--rate limits messages per second (default unlimited). Progress goes to stderr every 2 s when
stderr is a terminal (--quiet silences it); a summary (records per shard, the arrival times
covered) goes to stdout at the end. With --follow it keeps publishing new records until
SIGINT/SIGTERM. A record is counted once nsqd has accepted its MPUB.`

func replayCommand() *ffcli.Command {
	var (
		sel selection
		o   replay.Options
	)
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	sel.register(fs)
	fs.StringVar(&o.NSQDTCPAddress, "nsqd-tcp-address", "", "nsqd TCP address to publish to (required)")
	fs.StringVar(&o.Topic, "to-topic", "", "NSQ topic to publish to (required)")
	fs.Float64Var(&o.Rate, "rate", 0, "messages per second (0 = unlimited)")
	return &ffcli.Command{
		Name:       "replay",
		ShortUsage: "nsqk replay --stream NAME|ARN --nsqd-tcp-address ADDR --to-topic T [--from P] [--to T] [--shard ID]... [--key K]... [--rate N] [--follow] [--quiet]",
		ShortHelp:  "publish a stream's records to an NSQ topic, in stream order per shard",
		LongHelp:   replayHelp,
		FlagSet:    fs,
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("replay: unexpected arguments %q", args)
			}
			ro, err := sel.options(time.Now())
			if err != nil {
				return fmt.Errorf("replay: %w", err)
			}
			kc, err := kinesisClient(ctx)
			if err != nil {
				return fmt.Errorf("replay: %w", err)
			}
			s, err := runReplay(ctx, kc, ro, o, os.Stderr, !sel.quiet && isTerminal(os.Stderr))
			if s != nil {
				writeReplaySummary(os.Stdout, s)
			}
			return explain(err)
		},
	}
}

func runReplay(ctx context.Context, kc logread.Kinesis, ro logread.Options, o replay.Options, errOut io.Writer, progress bool) (*replay.Summary, error) {
	o.Warn = func(s string) { fmt.Fprintln(errOut, "nsqk replay: warning:", s) }
	ro.Warn = o.Warn
	rp, err := replay.New(o)
	if err != nil {
		return nil, err
	}
	ro.Flush = func() error { return rp.Flush(ctx) }
	lr, err := logread.New(kc, ro)
	if err != nil {
		rp.Close(ctx)
		return nil, err
	}
	if progress {
		stop := startProgress(errOut, "replay", lr)
		defer stop()
	}
	err = lr.Run(ctx, func(rec *logread.Record) error { return rp.Add(ctx, rec) })
	// Publish what was read before an interrupt.
	s, cerr := rp.Close(context.WithoutCancel(ctx))
	if err == nil {
		err = cerr
	}
	return s, err
}

func writeReplaySummary(w io.Writer, s *replay.Summary) {
	fmt.Fprintf(w, "published %d messages\n", s.Published)
	if len(s.Shards) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "shard\trecords\tfirst arrival\tlast arrival")
	for _, id := range s.ShardIDs() {
		sh := s.Shards[id]
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", id, sh.Records, sh.FirstArrival.UTC().Format(time.RFC3339Nano), sh.LastArrival.UTC().Format(time.RFC3339Nano))
	}
	tw.Flush()
}
