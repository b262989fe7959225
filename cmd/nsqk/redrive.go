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
	"github.com/nsqk/nsqk/shared/redrive"
)

const redriveHelp = `Consumes the bridge's dead-letter topic and publishes each envelope's original body back to
the original topic (the envelope's "topic", or --to-topic) on the same nsqd. An envelope is
FINished only after nsqd accepted the publish: a redrive killed midway loses nothing.

--reason and --since/--until (the original message's NSQ publish time, the envelope's
"timestamp") select envelopes; the others stay in the dead-letter topic. Envelopes whose body
was truncated are never redriven: they are kept and counted. Two envelopes of the same original
message (same nsqd and message id) are redriven once.

--skip-present first looks for each late_redelivery or max_attempts message in the stream (the
bridge may have written those on an earlier delivery; bad input it never writes): it reads the
shard holding the message's partition key (--partition-key, the bridge's JSON path) from the
envelope's timestamp minus --lookback up to the tip, and FINishes envelopes whose body is already
there without publishing them (counted "already in the stream").

Envelopes dead-lettered after redrive started are left for the next run: a redrive ends even
while new dead letters keep coming, and never takes back a message it has just redriven.

Redrive reads one channel of the dead-letter topic (--channel, default nsqk_redrive). NSQ gives
a channel only the messages published after it was created (or, for a topic's first channel,
the backlog the topic held): create it when you deploy the bridge, e.g.
  curl -X POST 'http://NSQD:4151/channel/create?topic=locations_dead&channel=nsqk_redrive'
Envelopes that are kept are held while redrive runs and requeued with no delay when it ends,
so they wait on the channel for the next run. Redrive ends once no envelope has arrived for
--idle and prints a summary by reason: redriven, already in the stream, kept.

A redriven message reaches the bridge as a new message, after newer messages of its key that
were written meanwhile: consumers see it out of order for that key.

Kinesis settings come from the AWS SDK's standard chain (AWS_REGION, AWS_ENDPOINT_URL_KINESIS,
credentials).`

func redriveCommand() *ffcli.Command {
	var (
		o            redrive.Options
		reasons      stringList
		since, until string
	)
	fs := flag.NewFlagSet("redrive", flag.ContinueOnError)
	fs.StringVar(&o.NSQDTCPAddress, "nsqd-tcp-address", "", "nsqd TCP address holding the dead-letter topic (required)")
	fs.StringVar(&o.Topic, "topic", "", "the dead-letter topic, e.g. locations_dead (required)")
	fs.StringVar(&o.Channel, "channel", redrive.DefaultChannel, "the dead-letter topic's channel to read")
	fs.StringVar(&o.ToTopic, "to-topic", "", "publish every body to this topic instead of the envelope's")
	fs.Var(&reasons, "reason", "redrive only envelopes with this reason (repeatable), e.g. late_redelivery")
	fs.StringVar(&since, "since", "", "redrive only messages published to NSQ at or after this RFC 3339 time (or duration ago)")
	fs.StringVar(&until, "until", "", "redrive only messages published to NSQ before this RFC 3339 time (or duration ago)")
	fs.BoolVar(&o.SkipPresent, "skip-present", false, "FIN without publishing the messages already in --stream")
	fs.StringVar(&o.Stream, "stream", "", "the bridge's stream (for --skip-present)")
	fs.DurationVar(&o.Lookback, "lookback", 5*time.Minute, "with --skip-present, start reading this long before the envelope's timestamp")
	fs.StringVar(&o.PartitionKey, "partition-key", "user_id", "the bridge's --partition-key (a JSON path into the body)")
	fs.BoolVar(&o.DryRun, "dry-run", false, "publish and FINish nothing; print what would happen")
	fs.DurationVar(&o.Idle, "idle", 2*time.Second, "end once no envelope has arrived for this long")
	fs.IntVar(&o.MaxInFlight, "max-in-flight", 2500, "envelopes held at once (kept ones stay held until the end; at most nsqd's --max-rdy-count)")
	return &ffcli.Command{
		Name:       "redrive",
		ShortUsage: "nsqk redrive --nsqd-tcp-address ADDR --topic DEAD_TOPIC [--to-topic T] [--reason R]... [--since T] [--until T] [--skip-present --stream S [--lookback 5m]] [--dry-run] [--idle 2s]",
		ShortHelp:  "publish dead letters back to their topic (optionally skipping those already in the stream)",
		LongHelp:   redriveHelp,
		FlagSet:    fs,
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("redrive: unexpected arguments %q", args)
			}
			now := time.Now()
			var err error
			if since != "" {
				if o.Since, err = logread.ParseTime(since, now); err != nil {
					return fmt.Errorf("redrive: --since: %w", err)
				}
			}
			if until != "" {
				if o.Until, err = logread.ParseTime(until, now); err != nil {
					return fmt.Errorf("redrive: --until: %w", err)
				}
			}
			o.Reasons = reasons
			if o.SkipPresent {
				if o.Stream == "" {
					return fmt.Errorf("redrive: --skip-present needs --stream")
				}
				kc, err := kinesisClient(ctx)
				if err != nil {
					return fmt.Errorf("redrive: %w", err)
				}
				o.Kinesis = kc
			}
			o.Warn = func(s string) { fmt.Fprintln(os.Stderr, "nsqk redrive: warning:", s) }
			s, err := redrive.Run(ctx, o)
			if s != nil {
				writeRedriveSummary(os.Stdout, s)
			}
			return explain(err)
		},
	}
}

func writeRedriveSummary(w io.Writer, s *redrive.Summary) {
	if s.DryRun {
		fmt.Fprintln(w, "dry run: nothing was published or removed; the counts say what would have happened")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "reason\tredriven\talready in the stream\tkept\tof which truncated\tduplicate envelopes\t")
	row := func(name string, c redrive.Counts) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t\n", name, c.Redriven, c.Present, c.Kept, c.Truncated, c.Duplicate)
	}
	for _, r := range s.Reasons() {
		row(r, *s.ByReason[r])
	}
	row("total", s.Total())
	tw.Flush()
	if s.Full {
		fmt.Fprintln(w, "the in-flight limit was reached by kept envelopes: envelopes behind them were not looked at (narrow --reason/--since, or raise --max-in-flight)")
	}
}
