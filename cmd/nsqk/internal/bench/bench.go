package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/nsqk/nsqk/cmd/nsqk/internal/benchkit"
	"github.com/nsqk/nsqk/shared/bridge"
	"github.com/nsqk/nsqk/shared/local/nsqlocal"
)

// sectionNames are the parts of `nsqk bench`, in the order they run; --skip names them.
var sectionNames = []string{"baseline", "null", "null-latency", "kinesalite", "shards", "latency", "latency-kinesalite", "routes", "groups"}

type options struct {
	messages       int
	quick          bool
	skip           string
	out            string
	dir            string
	micro          string
	maxInFlight    int
	maxBuffered    time.Duration
	shards         int
	repeat         int
	users          int
	seed           uint64
	smallMessages  int
	scaleMessages  int
	shardCounts    string
	latencyRates   string
	latencyMBT     string
	latencyFor     time.Duration
	latencyWarmup  time.Duration
	profile        bool
	verifyReadback bool
	timeout        time.Duration
	bridgeArgs     string
	sinkLatency    time.Duration
	kinesisLatency time.Duration
	released       string // the consumer built against go-nsq as released
	compareExe     string // an other nsqk whose bridge drains next to this one's

	// Set by tests: the program run as the child processes (default os.Executable()) and extra
	// environment for them.
	exe      string
	childEnv []string
	args     []string // the command line, for the report
}

func Command() *ffcli.Command {
	o := options{}
	def := bridge.NewOptions()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.IntVar(&o.messages, "messages", 1_000_000, "messages per drain run (pre-published once; every run drains the same ones)")
	fs.BoolVar(&o.quick, "quick", false, "smoke-test sizes: 100k messages, 20k small messages, 5 s latency runs, no repeats (explicit flags still win)")
	fs.StringVar(&o.skip, "skip", "", "comma-separated sections to leave out: "+strings.Join(sectionNames, ", "))
	fs.StringVar(&o.out, "out", "", "JSON report path (default <dir>/report.json)")
	fs.StringVar(&o.dir, "dir", ".bench", "directory for the report, child logs and profiles")
	fs.StringVar(&o.micro, "micro", "", "file of 'go test -bench' output to summarise into the report (make bench writes .bench/micro.txt)")
	fs.IntVar(&o.maxInFlight, "max-in-flight", def.MaxInFlight, "NSQ max-in-flight of the bridge and of the baseline consumer")
	fs.DurationVar(&o.maxBuffered, "max-buffered-time", def.MaxBufferedTime, "bridge --max-buffered-time of the drain runs")
	fs.IntVar(&o.shards, "shards", 4, "shards of the stream in the main drain runs (null sink and kinesalite) and the latency runs")
	fs.IntVar(&o.repeat, "repeat", 3, "interleaved repetitions of the baseline and bridge->null drains (figures use the median)")
	fs.IntVar(&o.users, "users", 100000, "distinct users in the generated messages (10-character ids)")
	fs.Uint64Var(&o.seed, "seed", 1, "generator seed")
	fs.IntVar(&o.smallMessages, "small-messages", 200_000, "messages of the smaller runs: each shard-scaling run and the Kinesis-latency drain")
	fs.IntVar(&o.scaleMessages, "scale-messages", 400_000, "messages of the scaling runs: in total through 1 and through 4 routes (routes), per nsqd node (groups)")
	fs.StringVar(&o.shardCounts, "shard-counts", "1,4,16", "shard counts of the shard-scaling runs (throttling null sink)")
	fs.StringVar(&o.latencyRates, "latency-rates", "5000,20000", "offered rates (msg/s) of the latency runs")
	fs.StringVar(&o.latencyMBT, "latency-max-buffered-times", "100ms,20ms", "bridge --max-buffered-time values of the latency runs")
	fs.DurationVar(&o.latencyFor, "latency-duration", 20*time.Second, "how long each latency run publishes")
	fs.DurationVar(&o.latencyWarmup, "latency-warmup", 3*time.Second, "start of each latency run left out of the percentiles")
	fs.BoolVar(&o.profile, "profile", false, "after the measured runs, drain once more with a CPU profile of the bridge (its --cpu-profile flag if it has one, else perf) and of this process")
	fs.BoolVar(&o.verifyReadback, "verify-kinesalite", true, "read the kinesalite stream back after its drain and check every message arrived once")
	fs.StringVar(&o.bridgeArgs, "bridge-args", "", "extra flags for every bridge child, space-separated (e.g. \"--record-keys=lane --key-buckets=2\")")
	fs.DurationVar(&o.kinesisLatency, "kinesis-latency", 20*time.Millisecond, "answer latency of the null sink in the null-latency drain (Kinesis-like PutRecords latency)")
	fs.DurationVar(&o.sinkLatency, "sink-latency", 0, "delay every null-sink PutRecords answer by this much (real Kinesis takes tens of ms; the bridge's batching depends on it)")
	fs.StringVar(&o.released, "released-baseline", "", "also drain with this consumer built against go-nsq as released (make bench builds cmd/nsqk/internal/bench/released into bin/), interleaved with the patched baseline")
	fs.StringVar(&o.compareExe, "compare-exe", "", "also drain into the null sink with the bridge of this other nsqk binary (e.g. one built from an earlier commit), interleaved with this one's, and report new/old")
	fs.DurationVar(&o.timeout, "run-timeout", 0, "give up on one drain run after this long (default: generous, from the message count)")
	return &ffcli.Command{
		Name:       "bench",
		ShortUsage: "nsqk bench [flags]",
		ShortHelp:  "benchmark the bridge against the physical limit: drain rate, CPU, memory, bytes, latency, shard scaling",
		LongHelp: `Runs an embedded nsqd, pre-publishes the same location messages once, and drains them with a
plain go-nsq consumer (the physical limit) and with the bridge (child processes, so their CPU
time and peak RSS are their own) into a null sink that verifies every message, into the null
sink answering after a Kinesis-like 20 ms, and into kinesalite. Then latency at fixed rates and
throughput against 1, 4 and 16 shards throttled like Kinesis. Then scaling: the same messages
through 4 routes of one bridge against 1 route, and two nsqd nodes behind an nsqlookupd drained
by two partitioned bridges against one node drained by one bridge.
Prints a table with a target and PASS/MISS per figure and writes a JSON report.
make bench runs the Go micro-benchmarks first and passes them with --micro.

"nsqk bench baseline" is the physical-limit consumer the benchmark starts; not for direct use.`,
		FlagSet:     fs,
		Subcommands: []*ffcli.Command{baselineCommand()},
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("bench: unexpected arguments %q", args)
			}
			set := map[string]bool{}
			fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
			o.applyQuick(set)
			o.args = os.Args
			return runBench(ctx, o, os.Stdout)
		},
	}
}

// applyQuick sets the --quick sizes for every flag not given explicitly.
func (o *options) applyQuick(set map[string]bool) {
	if !o.quick {
		return
	}
	if !set["messages"] {
		o.messages = 100_000
	}
	if !set["small-messages"] {
		o.smallMessages = 20_000
	}
	if !set["scale-messages"] {
		o.scaleMessages = 100_000
	}
	if !set["latency-duration"] {
		o.latencyFor = 5 * time.Second
	}
	if !set["latency-warmup"] {
		o.latencyWarmup = time.Second
	}
	if !set["repeat"] {
		o.repeat = 1
	}
}

func (o *options) validate() error {
	var errs []error
	for _, s := range o.skipList() {
		if !slices.Contains(sectionNames, s) {
			errs = append(errs, fmt.Errorf("--skip: unknown section %q (sections: %s)", s, strings.Join(sectionNames, ", ")))
		}
	}
	if o.messages < 1 || o.smallMessages < 1 || o.scaleMessages < 4 {
		errs = append(errs, errors.New("--messages and --small-messages must be positive, --scale-messages at least 4"))
	}
	if o.maxInFlight < 1 || o.shards < 1 || o.repeat < 1 || o.users < 1 {
		errs = append(errs, errors.New("--max-in-flight, --shards, --repeat and --users must be positive"))
	}
	if _, err := o.shardCountList(); err != nil {
		errs = append(errs, err)
	}
	if _, err := o.rateList(); err != nil {
		errs = append(errs, err)
	}
	if _, err := o.mbtList(); err != nil {
		errs = append(errs, err)
	}
	if o.latencyFor <= o.latencyWarmup || o.latencyWarmup < 0 {
		errs = append(errs, errors.New("--latency-duration must exceed --latency-warmup"))
	}
	return errors.Join(errs...)
}

func (o *options) skipList() []string {
	var out []string
	for _, s := range strings.Split(o.skip, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (o *options) on(section string) bool { return !slices.Contains(o.skipList(), section) }

func intList(s, flagName string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--%s: %q is not a positive integer", flagName, f)
		}
		out = append(out, n)
	}
	return out, nil
}

func (o *options) shardCountList() ([]int, error) {
	return intList(o.shardCounts, "shard-counts")
}
func (o *options) rateList() ([]int, error) {
	return intList(o.latencyRates, "latency-rates")
}

func (o *options) mbtList() ([]time.Duration, error) {
	var out []time.Duration
	for _, f := range strings.Split(o.latencyMBT, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		d, err := time.ParseDuration(f)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("--latency-max-buffered-times: %q is not a positive duration", f)
		}
		out = append(out, d)
	}
	return out, nil
}

// bench is one `nsqk bench` run: the embedded nsqd, the published message sets and the report.
type bench struct {
	o      options
	out    io.Writer
	exe    string
	logDir string
	nsqd   *nsqlocal.NSQD
	main   *messageSet // the drain topic
	small  *messageSet // the smaller topic: shard scaling and the Kinesis-latency drain
	// Pinned copies of --released-baseline and --compare-exe ("" when not given).
	releasedExe, compareExe string
	r                       *Report
	start                   time.Time
}

func runBench(ctx context.Context, o options, out io.Writer) error {
	if err := o.validate(); err != nil {
		return err
	}
	if o.out == "" {
		o.out = filepath.Join(o.dir, "report.json")
	}
	b := &bench{o: o, out: out, logDir: filepath.Join(o.dir, "logs"), start: time.Now()}
	b.r = newReport(o)
	if err := b.setup(ctx); err != nil {
		b.close()
		return err
	}
	defer b.close()

	b.section(ctx, "baseline", "null", b.mainDrains)
	b.section(ctx, "null-latency", "", b.latencyDrain)
	b.section(ctx, "kinesalite", "", b.kinesaliteDrain)
	b.section(ctx, "shards", "", b.shardScaling)
	b.section(ctx, "latency", "", func(ctx context.Context) error { return b.latencyRuns(ctx, sinkNull) })
	b.section(ctx, "latency-kinesalite", "", func(ctx context.Context) error { return b.latencyRuns(ctx, sinkKinesalite) })
	b.section(ctx, "routes", "", b.routesScaling)
	b.section(ctx, "groups", "", b.groupsScaling)
	if o.micro != "" {
		b.section(ctx, "micro", "", b.microBenchmarks)
	}
	if o.profile {
		b.section(ctx, "profile", "", b.profileRun)
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	b.r.Finished = time.Now()
	b.r.LoadAvgEnd = benchkit.LoadAvg()
	b.r.OrchestratorTotal = usageOf(benchkit.SelfUsage())
	computeFigures(b.r)
	fmt.Fprintln(out)
	printReport(out, b.r)
	if err := writeReport(o.out, b.r); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nreport: %s   logs: %s\n", o.out, b.logDir)
	if !b.r.OK {
		return errors.New("bench: a correctness check failed (see FAIL rows and notes above)")
	}
	return nil
}

// section runs one part unless skipped (a two-part section runs unless both parts are skipped;
// it checks which part to run itself); an error is recorded in the report and the run goes on.
func (b *bench) section(ctx context.Context, name, alt string, f func(context.Context) error) {
	if ctx.Err() != nil {
		return
	}
	if !b.o.on(name) && (alt == "" || !b.o.on(alt)) {
		b.r.Skipped = append(b.r.Skipped, name)
		if alt != "" {
			b.r.Skipped = append(b.r.Skipped, alt)
		}
		return
	}
	if alt != "" && !b.o.on(alt) {
		b.r.Skipped = append(b.r.Skipped, alt)
	} else if alt != "" && !b.o.on(name) {
		b.r.Skipped = append(b.r.Skipped, name)
	}
	t0 := time.Now()
	switch {
	case alt == "":
		b.say("== %s", name)
	case !b.o.on(name):
		b.say("== %s", alt)
	case !b.o.on(alt):
		b.say("== %s", name)
	default:
		b.say("== %s + %s", name, alt)
	}
	if err := f(ctx); err != nil {
		if ctx.Err() != nil {
			return
		}
		b.r.fail("%s: %v", name, err)
		b.say("   %s failed: %v", name, err)
	}
	b.r.SectionSeconds[name] = time.Since(t0).Seconds()
}

func (b *bench) say(format string, a ...any) {
	fmt.Fprintf(b.out, "[%6.1fs] %s\n", time.Since(b.start).Seconds(), fmt.Sprintf(format, a...))
}

func (b *bench) close() {
	if b.nsqd != nil {
		b.nsqd.Stop()
	}
}
