package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nsqio/go-nsq"
	"github.com/peterbourgon/ff/v3/ffcli"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nsqk/nsqk/cmd/nsqk/internal/promq"
	"github.com/nsqk/nsqk/shared/bridge"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/nsqlocal"
	"github.com/nsqk/nsqk/shared/location"
	"github.com/nsqk/nsqk/shared/redrive"
)

type devOptions struct {
	duration    time.Duration
	rate        int
	users       int
	shards      int
	keyBuckets  int
	badEvery    int
	maxBuffered time.Duration
	every       time.Duration
	dir         string
	emulator    string
	// functionsDir holds the consumers' packages (functions/<name>/main.go); consumers picks the
	// own ones to run (all, none, or names).
	functionsDir string
	consumers    string
	consumerEnv  []string // more environment for own consumers, KEY=value each
	// routes, groups and nodes select the routes-and-groups demo (devroutes.go).
	routes, groups, nodes int
}

func devCommand() *ffcli.Command {
	var o devOptions
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "how long to publish (0 = until Ctrl-C)")
	fs.IntVar(&o.rate, "rate", 2000, "location messages published per second")
	fs.IntVar(&o.users, "users", 100000, "distinct users (10-character ids)")
	fs.IntVar(&o.shards, "shards", 4, "shards of the local stream")
	fs.IntVar(&o.keyBuckets, "key-buckets", 2, "bridge --key-buckets")
	fs.IntVar(&o.badEvery, "bad-every", 1000, "publish one bad message (rotating through the bad-input classes) every N messages (0 = none)")
	fs.DurationVar(&o.maxBuffered, "max-buffered-time", 100*time.Millisecond, "bridge --max-buffered-time")
	fs.DurationVar(&o.every, "status-every", 2*time.Second, "status line interval")
	fs.StringVar(&o.dir, "dir", ".dev", "where logs and the consumers' outputs go")
	fs.StringVar(&o.emulator, "emulator", "kinesalite", "local Kinesis: kinesalite or kinesis-mock")
	fs.StringVar(&o.functionsDir, "functions", "functions", "directory of the consumer functions (<dir>/<name>/main.go)")
	fs.StringVar(&o.consumers, "consumers", "all", "own consumers to run besides monitor and lastlocation: all (every <functions>/<name>/main.go but bridge), none, or a comma-separated list of names")
	fs.Func("consumer-env", "KEY=value added to the environment of every own consumer (repeatable)", func(v string) error {
		if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
			return fmt.Errorf("%q: want KEY=value", v)
		}
		o.consumerEnv = append(o.consumerEnv, v)
		return nil
	})
	fs.IntVar(&o.routes, "routes", 1, "with more than 1 (or --groups more than 1): N topics into N streams through a --config of N routes, instead of the consumers' flow")
	fs.IntVar(&o.groups, "groups", 1, "bridge programs splitting the nsqd nodes with --nsqd-partition i/N (with --routes or alone)")
	fs.IntVar(&o.nodes, "nodes", 4, "embedded nsqd nodes behind an embedded nsqlookupd, with --routes or --groups")
	return &ffcli.Command{
		Name:       "dev",
		ShortUsage: "nsqk dev [flags]",
		ShortHelp:  "run the whole flow locally: embedded nsqd, a local Kinesis, the bridge, the consumers",
		FlagSet:    fs,
		Exec: func(ctx context.Context, _ []string) error {
			if o.routes > 1 || o.groups > 1 {
				_, err := runDevRoutes(ctx, o, os.Stdout)
				return err
			}
			_, err := runDev(ctx, o, os.Stdout)
			return err
		},
	}
}

// devBadInputs rotate through the bad-input classes the bridge dead-letters.
var devBadInputs = []string{
	`{"seq":1,"note":"no user_id"}`,
	`{"user_id":"","seq":1}`,
	`{"user_id":12345,"seq":1}`,
	`{"user_id":"u1","seq":`,
	`{"user_id":"` + strings.Repeat("x", 300) + `"}`,
	"{\"user_id\":\"bad\xff\"}",
}

// devResult is what a dev run did, for its test.
type devResult struct {
	Published, Bad, LeftInNSQ       int64
	Acked, DeadLettered, Records    float64
	MonitorRecords, OrderViolations int64
	Duplicates, Applied, OnFailure  int64
	Own                             map[string]ownResult // per own consumer
}

func runDev(ctx context.Context, o devOptions, out io.Writer) (res devResult, _ error) {
	start := time.Now()
	say := func(format string, a ...any) {
		fmt.Fprintf(out, "[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, a...))
	}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return res, err
	}
	logf, err := os.Create(filepath.Join(o.dir, "bridge.log"))
	if err != nil {
		return res, err
	}
	defer logf.Close()
	log := slog.New(slog.NewJSONHandler(logf, &slog.HandlerOptions{Level: slog.LevelInfo}))

	names, err := findConsumers(o.functionsDir, o.consumers)
	if err != nil {
		return res, err
	}
	for _, name := range names {
		say("building %s -> %s", filepath.Join(o.functionsDir, name), filepath.Join(o.dir, "bin", name))
	}
	own, err := buildConsumers(ctx, o.functionsDir, o.dir, names)
	if err != nil {
		return res, err
	}

	n, err := nsqlocal.Start(nsqlocal.Options{Logger: log})
	if err != nil {
		return res, err
	}
	defer n.Stop()
	say("nsqd (embedded github.com/nsqio/nsq/nsqd) on tcp://%s, http://%s", n.TCPAddr, n.HTTPAddr)

	em, err := kinesislocal.Start(ctx, kinesislocal.Options{Kind: kinesislocal.Kind(o.emulator)})
	if err != nil {
		return res, err
	}
	defer em.Close()
	const stream, topic = "nsqk-dev", "locations"
	kc := em.Client()
	if err := kinesislocal.CreateStream(ctx, kc, stream, int32(o.shards)); err != nil {
		return res, err
	}
	say("%s on %s: stream %q with %d shards", o.emulator, em.Endpoint, stream, o.shards)
	// The channel `nsqk redrive` reads: it only gets dead letters published after it exists.
	n.GetTopic(topic + "_dead").GetChannel(redrive.DefaultChannel)
	say("read the log back from another terminal while this runs:\n%s", readBackCommands(em.Endpoint, n.TCPAddr, stream, topic))

	bo := bridge.NewOptions()
	bo.NSQDTCPAddresses, bo.NSQDHTTPAddresses = []string{n.TCPAddr}, []string{n.HTTPAddr}
	bo.Topic, bo.Stream, bo.KeyBuckets, bo.MaxBufferedTime = topic, stream, o.keyBuckets, o.maxBuffered
	bo.BacklogInterval = time.Second
	reg := prometheus.NewRegistry()
	b, err := bridge.New(bo, kc, log, reg)
	if err != nil {
		return res, err
	}
	bctx, stopBridge := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBridge()
	bdone := make(chan error, 1)
	go func() { bdone <- b.Run(bctx) }()
	say("bridge: topic %q channel %q -> stream %q, key buckets %d, max-buffered-time %s, strict order (log: %s)",
		topic, bo.Channel, stream, o.keyBuckets, o.maxBuffered, logf.Name())

	cons, err := startConsumers(ctx, kc, stream, o.dir, own, append([]string{"AWS_ENDPOINT_URL_KINESIS=" + em.Endpoint}, o.consumerEnv...))
	if err != nil {
		return res, err
	}
	defer cons.stop()
	say("consumers through the local event source mapping (batch 100, window 200ms, ReportBatchItemFailures, bisect, 3 retries): monitor, lastlocation (in-process)%s (EMF: %s/*-metrics.jsonl, on-failure: %s/*-on-failure.jsonl)", ownNames(own), o.dir, o.dir)
	say("  %s", cons.standIns())

	dead := &deadLetters{}
	dlc, err := dead.consume(n.TCPAddr, topic+"_dead")
	if err != nil {
		return res, err
	}
	defer dlc.Stop()

	var published, bad atomic.Int64
	pctx, stopPub := context.WithCancel(ctx)
	if o.duration > 0 {
		pctx, stopPub = context.WithTimeout(ctx, o.duration)
	}
	defer stopPub()
	pdone := make(chan error, 1)
	go func() { pdone <- publish(pctx, n.TCPAddr, topic, o, &published, &bad) }()
	say("publishing %d location messages/s from %d users (one bad message every %d) for %s",
		o.rate, o.users, o.badEvery, durationText(o.duration))

	ticker := time.NewTicker(o.every)
	defer ticker.Stop()
	var last promq.Families
	lastAt := time.Now()
	status := func() {
		f, _ := promq.Gather(reg)
		secs := time.Since(lastAt).Seconds()
		rate := func(name string) float64 { return (f.Value(name) - last.Value(name)) / secs }
		lat := f.Histogram("nsqk_bridge_ack_latency_seconds").Sub(last.Histogram("nsqk_bridge_ack_latency_seconds"))
		say("published %d (+%d bad) | acked %.0f (%.0f msg/s) dead-lettered %.0f held %.0f | %.0f Kinesis records/s in %.0f PutRecords/s | ack latency p50 %s p99 %s | per shard %s",
			published.Load(), bad.Load(), f.Value("nsqk_bridge_messages_acked_total"), rate("nsqk_bridge_messages_acked_total"),
			f.Value("nsqk_bridge_dead_lettered_total"), f.Value("nsqk_bridge_in_flight_messages"), rate("nsqk_bridge_aggregates_total"),
			rate("nsqk_bridge_putrecords_calls_total"), ms(lat.Quantile(0.5)), ms(lat.Quantile(0.99)), perShard(f))
		say("  read back: %s", cons.status())
		last, lastAt = f, time.Now()
	}
wait:
	for {
		select {
		case err := <-pdone:
			if err != nil {
				return res, err
			}
			break wait
		case <-ticker.C:
			status()
		case err := <-bdone:
			return res, fmt.Errorf("bridge stopped: %v", err)
		}
	}
	say("publisher stopped; waiting for the bridge to drain NSQ")
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for ctx.Err() == nil && (n.Depth(topic, bo.Channel) > 0 || b.Held() > 0) {
		select {
		case <-ticker.C:
			status()
		case <-poll.C:
		case <-ctx.Done():
		}
	}
	say("stopping the bridge (what SIGTERM does: stop taking messages, flush, FIN, exit)")
	stopBridge()
	if err := <-bdone; err != nil {
		return res, fmt.Errorf("bridge: %w", err)
	}
	status()
	written := int64(promqValue(reg, "nsqk_bridge_aggregates_total"))
	say("waiting for the %d consumers to process the %d Kinesis records", 2+len(own), written)
	if err := cons.wait(ctx, written, ticker.C, status); err != nil {
		return res, err
	}
	cons.halt()

	f, _ := promq.Gather(reg)
	lat := f.Histogram("nsqk_bridge_ack_latency_seconds")
	in, outB := f.Value("nsqk_bridge_bytes_in_total"), f.Value("nsqk_bridge_bytes_out_total")
	fmt.Fprintln(out)
	fmt.Fprintln(out, "summary")
	fmt.Fprintf(out, "  NSQ        published %d good + %d bad; left in NSQ: %d\n", published.Load(), bad.Load(), n.Depth(topic, bo.Channel))
	fmt.Fprintf(out, "  bridge     acked %.0f, dead-lettered %.0f %v\n", f.Value("nsqk_bridge_messages_acked_total"),
		f.Value("nsqk_bridge_dead_lettered_total"), f.ByLabel("nsqk_bridge_dead_lettered_total", "reason"))
	fmt.Fprintf(out, "  kinesis    %.0f records (%.1f messages each) in %.0f PutRecords calls; bytes out/in %.3f\n",
		f.Value("nsqk_bridge_aggregates_total"), f.Value("nsqk_bridge_messages_acked_total")/math.Max(1, f.Value("nsqk_bridge_aggregates_total")),
		f.Value("nsqk_bridge_putrecords_calls_total"), outB/math.Max(1, in))
	fmt.Fprintf(out, "  latency    NSQ publish -> Kinesis ack: p50 %s, p99 %s, p99.9 %s\n", ms(lat.Quantile(0.5)), ms(lat.Quantile(0.99)), ms(lat.Quantile(0.999)))
	cons.summary(ctx, out)
	if e := dead.sample(); e != "" {
		fmt.Fprintf(out, "  dead letter example: %s\n", e)
	}
	fmt.Fprintf(out, "\nread the log back (these endpoints lived as long as this run; `nsqk dev --duration 0` keeps them up until Ctrl-C):\n%s\n",
		readBackCommands(em.Endpoint, n.TCPAddr, stream, topic))
	ms, ls, mm := cons.mon.Stats(), cons.ll.Stats(), cons.mm.Stats()
	res = devResult{Published: published.Load(), Bad: bad.Load(), LeftInNSQ: n.Depth(topic, bo.Channel),
		Acked: f.Value("nsqk_bridge_messages_acked_total"), DeadLettered: f.Value("nsqk_bridge_dead_lettered_total"),
		Records: f.Value("nsqk_bridge_aggregates_total"), MonitorRecords: ms.Records, OrderViolations: ms.OrderViolations,
		Duplicates: ms.Duplicates, Applied: ls.Applied, OnFailure: mm.OnFailureRecords + cons.ml.Stats().OnFailureRecords}
	res.Own, err = cons.ownResults(ctx)
	return res, err
}

// readBackCommands are the one-line commands that tail the local stream and redrive its dead letters.
func readBackCommands(endpoint, nsqd, stream, topic string) string {
	env := fmt.Sprintf("AWS_ENDPOINT_URL_KINESIS=%s AWS_REGION=%s AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local", endpoint, kinesislocal.Region)
	return fmt.Sprintf("  %s go run ./cmd/nsqk tail --stream %s --follow\n  %s go run ./cmd/nsqk redrive --nsqd-tcp-address %s --topic %s_dead --skip-present --stream %s --dry-run   (without --dry-run: publish them back)",
		env, stream, env, nsqd, topic, stream)
}

func durationText(d time.Duration) string {
	if d == 0 {
		return "ever (Ctrl-C stops)"
	}
	return d.String()
}

func ms(seconds float64) string {
	if math.IsNaN(seconds) {
		return "-"
	}
	return fmt.Sprintf("%.0fms", seconds*1000)
}

// publish sends location messages at o.rate in 10 ms batches, with a bad message every o.badEvery.
func publish(ctx context.Context, addr, topic string, o devOptions, published, bad *atomic.Int64) error {
	p, err := nsq.NewProducer(addr, nsq.NewConfig())
	if err != nil {
		return err
	}
	defer p.Stop()
	p.SetLogger(nil, nsq.LogLevelError)
	gen := location.NewGenerator(o.users, uint64(time.Now().UnixNano()))
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	sent := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			due := int(now.Sub(start).Seconds()*float64(o.rate)) - sent
			if due <= 0 {
				continue
			}
			batch := make([][]byte, 0, due)
			for i := 0; i < due; i++ {
				sent++
				if o.badEvery > 0 && sent%o.badEvery == 0 {
					batch = append(batch, []byte(devBadInputs[(sent/o.badEvery)%len(devBadInputs)]))
					bad.Add(1)
					continue
				}
				body, _, _ := gen.Next(nil)
				batch = append(batch, body)
				published.Add(1)
			}
			if err := p.MultiPublish(topic, batch); err != nil {
				return err
			}
		}
	}
}

// deadLetters reads the dead-letter topic.
type deadLetters struct {
	mu    sync.Mutex
	first string
}

func (d *deadLetters) consume(addr, topic string) (*nsq.Consumer, error) {
	c, err := nsq.NewConsumer(topic, "dev", nsq.NewConfig())
	if err != nil {
		return nil, err
	}
	c.SetLogger(nil, nsq.LogLevelError)
	c.AddHandler(nsq.HandlerFunc(func(m *nsq.Message) error {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.first == "" {
			d.first = string(m.Body)
		}
		return nil
	}))
	return c, c.ConnectToNSQD(addr)
}

func (d *deadLetters) sample() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.first
}

func promqValue(g prometheus.Gatherer, name string) float64 {
	f, _ := promq.Gather(g)
	return f.Value(name)
}

// perShard lists the messages stored per shard, e.g. "0:1200 1:1180".
func perShard(f promq.Families) string {
	by := f.ByLabel("nsqk_bridge_shard_messages_total", "shard")
	ids := make([]string, 0, len(by))
	for id := range by {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(' ')
		}
		n := strings.TrimLeft(strings.TrimPrefix(id, "shardId-"), "0")
		if n == "" {
			n = "0"
		}
		fmt.Fprintf(&b, "%s:%.0f", n, by[id])
	}
	return b.String()
}
