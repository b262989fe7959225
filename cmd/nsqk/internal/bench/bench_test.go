package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsqk/nsqk/cmd/nsqk/internal/benchkit"
	"github.com/nsqk/nsqk/cmd/nsqk/internal/nullsink"
	"github.com/nsqk/nsqk/shared/bridgecmd"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
)

// childEnvVar makes the test binary act as nsqk: `nsqk bench` re-executes itself for the
// measured processes, and in a test "itself" is the test binary.
const childEnvVar = "NSQK_BENCH_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnvVar) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := childMain(ctx, os.Args[1:])
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// childMain is the part of nsqk's main that the benchmark's children use: the bridge program
// and the baseline consumer.
func childMain(ctx context.Context, args []string) int {
	if len(args) > 0 && args[0] == "bridge" {
		return bridgecmd.Main(ctx, args[1:], os.Stdout, os.Stderr)
	}
	cmd := Command()
	if err := cmd.ParseAndRun(ctx, args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "nsqk:", err)
		return 1
	}
	return 0
}

const sampleMicro = `goos: linux
goarch: amd64
pkg: github.com/nsqk/nsqk/shared/kpl
cpu: AMD EPYC
BenchmarkAggregate-2       	    2000	      8763 ns/op	  28.53 MB/s	       262.0 out-B/record	    1018 B/op	       1 allocs/op
BenchmarkDeaggregate/nsqk-2         	      20	    265488 ns/op	 509.97 MB/s	   1885546 records/s	    3684 B/op	       1 allocs/op
PASS
ok  	github.com/nsqk/nsqk/shared/kpl	0.153s
PASS
ok  	github.com/nsqk/nsqk/shared/consumer	0.008s
`

// TestBenchSmoke runs the whole `nsqk bench --quick` path with tiny numbers (child processes,
// nsqd, null sink, throttling, latency, micro summary) and checks that the report is complete
// and every exact-once check passed.
func TestBenchSmoke(t *testing.T) {
	dir := t.TempDir()
	micro := filepath.Join(dir, "micro.txt")
	if err := os.WriteFile(micro, []byte(sampleMicro), 0o644); err != nil {
		t.Fatal(err)
	}
	skip := "latency-kinesalite"
	_, toolsErr := kinesislocal.ToolsDir()
	withKinesalite := !testing.Short() && toolsErr == nil
	if !withKinesalite {
		skip += ",kinesalite"
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	o := options{
		messages: 3000, quick: true, skip: skip, dir: dir, micro: micro, maxInFlight: 500, maxBuffered: 20 * time.Millisecond,
		shards: 2, repeat: 1, users: 500, seed: 7, smallMessages: 1500, scaleMessages: 2000, shardCounts: "1,4",
		latencyRates: "2000", latencyMBT: "20ms", latencyFor: 1500 * time.Millisecond, latencyWarmup: 300 * time.Millisecond,
		verifyReadback: true, timeout: 60 * time.Second, kinesisLatency: 5 * time.Millisecond,
		exe: exe, childEnv: []string{childEnvVar + "=1"}, args: []string{"nsqk", "bench", "(test)"},
		compareExe: exe, profile: true,
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err = runBench(ctx, o, &out)
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}

	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if !r.OK || len(r.Errors) > 0 {
		t.Fatalf("report not OK: %v %v", r.Errors, r.Notes)
	}
	want := []string{"baseline", "bridge-null", "bridge-compared", "bridge-null-latency", "shards-1", "shards-4"}
	if withKinesalite {
		want = append(want, "bridge-kinesalite")
	}
	got := map[string]drainResult{}
	for _, d := range r.Drains {
		got[d.Name] = d
	}
	for _, name := range want {
		d, ok := got[name]
		if !ok || !d.Drained || d.Error != "" || d.Rate <= 0 || d.ExitCode != 0 || d.CPUMicrosPerMsg <= 0 || d.MaxRSSMB <= 0 || len(d.Timeline) == 0 {
			t.Fatalf("drain %s: %+v", name, d)
		}
		if name == "baseline" {
			if d.Received < 3000 {
				t.Fatalf("baseline received %d", d.Received)
			}
			continue
		}
		if d.Verification == nil || !d.Verification.OK || d.Verification.Unique != int64(d.Messages) || d.Bridge == nil || d.Bridge.Acked != float64(d.Messages) {
			t.Fatalf("drain %s: verification %+v bridge %+v", name, d.Verification, d.Bridge)
		}
		if d.MaxRSSMB > 150 {
			t.Fatalf("%s: peak RSS %.0f MB: the parent's memory leaks into the measurement", name, d.MaxRSSMB)
		}
	}
	if got["shards-1"].SinkStats == nil || got["bridge-null"].SinkStats == nil || got["bridge-null"].SinkStats.UserRecords != 3000 {
		t.Fatal("sink stats missing")
	}
	if len(r.Latency) != 2 || !r.Latency[1].Compared || r.Latency[1].Samples == 0 || r.Latency[1].CPUMicrosPerMsg <= 0 {
		t.Fatalf("compared latency run %+v", r.Latency)
	}
	if len(r.Latency) != 2 || r.Latency[0].Samples == 0 || r.Latency[0].SinkSamples == 0 || r.Latency[0].Verification == nil ||
		!r.Latency[0].Verification.OK || r.Latency[0].P99 <= 0 {
		t.Fatalf("latency %+v", r.Latency)
	}
	scaling := map[string]scaleResult{}
	for _, x := range r.Scaling {
		scaling[x.Name] = x
	}
	for name, want := range map[string]struct{ procs, msgs, sinks int }{
		"routes-1": {1, 2000, 1}, "routes-4": {1, 2000, 4}, "groups-1": {1, 2000, 1}, "groups-2": {2, 4000, 2},
	} {
		x := scaling[name]
		if !x.Drained || x.Error != "" || x.Rate <= 0 || x.Messages != want.msgs || len(x.Bridges) != want.procs || len(x.Verification) != want.sinks || !x.verified() {
			t.Fatalf("scaling run %s: %+v", name, x)
		}
		for _, v := range x.Verification {
			if v.Unique != v.Expected || v.Expected == 0 {
				t.Fatalf("scaling run %s: verification %+v", name, v)
			}
		}
		for _, p := range x.Bridges {
			if p.ExitCode != 0 || p.CPUMicrosPerMsg <= 0 || p.MaxRSSMB <= 0 || p.Acked != float64(p.Messages) {
				t.Fatalf("scaling run %s, bridge %+v", name, p)
			}
		}
	}
	if r.Micro == nil || len(r.Micro.Benchmarks) != 2 {
		t.Fatalf("micro %+v", r.Micro)
	}
	names := map[string]string{}
	for _, f := range r.Figures {
		names[f.Name] = f.Verdict
	}
	for _, n := range []string{"bridge / patched baseline: drain rate", "bridge / compared bridge: CPU per message", "bridge CPU per message (process lifetime)", "bridge peak RSS",
		"payload bytes out / bytes in (bridge metrics)", "exact-once at the null sink", "exact-once through throttling retries",
		"bridge graceful shutdown (SIGTERM after drain)", "kpl.Aggregate", "consumer", "bridge -> null sink answering after 5ms",
		"4 routes / 1 route: drain rate", "two bridges on two nodes / one bridge on one node: drain rate"} {
		if _, ok := names[n]; !ok {
			t.Errorf("figure %q missing", n)
		}
	}
	if p := r.Profile; p == nil || p.Stages == nil || p.ComparedStages == nil || len(p.Stages.Stages) != len(stages)+1 || p.Stages.CPUSeconds <= 0 {
		t.Errorf("profile %+v", p)
	} else if sum := func() (v float64) {
		for _, s := range p.Stages.Stages {
			v += s.Percent
		}
		return v
	}(); sum < 99.9 || sum > 100.1 {
		t.Errorf("stages add up to %.2f%%", sum)
	}
	if names["exact-once at the null sink"] != verdictPass || names["payload bytes out / bytes in (null sink's count)"] != verdictPass {
		t.Errorf("verdicts %v", names)
	}
	if r.Machine.Cores == 0 || r.Machine.GoVersion == "" || r.Messages == nil || r.Messages.Count != 3000 {
		t.Errorf("header %+v %+v", r.Machine, r.Messages)
	}
	if !strings.Contains(out.String(), "all correctness checks passed") {
		t.Error("no verdict line")
	}
}

// syntheticReport is a report with every kind of run, for the figure and table code.
func syntheticReport() *Report {
	ok := &nullsink.Verification{Expected: 1000, Received: 1000, Unique: 1000, OK: true}
	st := &nullsink.Stats{RecordBytes: 1020_000, UserBytes: 1_000_000, BodyBytes: 1_400_000, EntriesAccepted: 10, HandlerCPU: time.Millisecond}
	bf := &bridgeFigures{BytesIn: 1_000_000, BytesOut: 1_020_000, Records: 10, PutCalls: 5, UserRecsPerRec: 100}
	r := newReport(options{messages: 1000, maxBuffered: 100 * time.Millisecond, latencyFor: time.Second})
	r.Machine = benchkit.Machine{CPUModel: "Test CPU", Cores: 2, GoVersion: "go1.26", LoadAvg: []float64{0.1, 0.1, 0.1}}
	r.Drains = []drainResult{
		{Name: "baseline-1", Kind: "baseline", Messages: 1000, Drained: true, Rate: 100_000, CPUMicrosPerMsg: 2, MaxRSSMB: 20},
		{Name: "bridge-null-1", Kind: "bridge", Sink: sinkNull, Messages: 1000, Drained: true, Rate: 90_000, CPUMicrosPerMsg: 4,
			MaxRSSMB: 40, Verification: ok, SinkStats: st, Bridge: bf},
		{Name: "baseline-2", Kind: "baseline", Messages: 1000, Drained: true, Rate: 100_000, CPUMicrosPerMsg: 2, MaxRSSMB: 20},
		{Name: "bridge-null-2", Kind: "bridge", Sink: sinkNull, Messages: 1000, Drained: true, Rate: 80_000, CPUMicrosPerMsg: 6,
			MaxRSSMB: 50, Verification: ok, SinkStats: st, Bridge: bf},
		{Name: "bridge-null-3", Kind: "bridge", Sink: sinkNull, Messages: 1000, Drained: true, Rate: 88_000, CPUMicrosPerMsg: 5,
			MaxRSSMB: 45, Verification: ok, SinkStats: st, Bridge: bf},
		{Name: "bridge-kinesalite", Kind: "bridge", Sink: sinkKinesalite, Messages: 1000, Drained: true, Rate: 20_000, MaxRSSMB: 60,
			Verification: ok},
		{Name: "shards-1", Kind: "bridge", Sink: sinkThrottled, Shards: 1, Messages: 1000, Drained: true, Rate: 4000, DrainSeconds: 1,
			Verification: ok, SinkStats: st},
		{Name: "shards-4", Kind: "bridge", Sink: sinkThrottled, Shards: 4, Messages: 1000, Drained: true, Rate: 15000, DrainSeconds: 1,
			Verification: ok, SinkStats: st},
		{Name: "shards-16", Kind: "bridge", Sink: sinkThrottled, Shards: 16, Messages: 1000, Drained: true, Rate: 76_000, DrainSeconds: 1,
			Verification: ok, SinkStats: st},
	}
	r.Latency = []latencyResult{
		{Name: "l1", Sink: sinkNull, Rate: 20000, MaxBufferedTime: "20ms", MaxBufferedMs: 20, AchievedRate: 20000, Samples: 100, P50: 15, P99: 44, P999: 60, Verification: ok},
		{Name: "l2", Sink: sinkNull, Rate: 20000, MaxBufferedTime: "100ms", MaxBufferedMs: 100, AchievedRate: 20000, Samples: 100, P50: 60, P99: 130, P999: 140, Verification: ok},
		{Name: "l3", Sink: sinkNull, Rate: 5000, MaxBufferedTime: "20ms", MaxBufferedMs: 20, AchievedRate: 5000, Samples: 100, P50: 15, P99: 80, P999: 90, Verification: ok},
	}
	r.Micro = &benchkit.GoBenchRun{Benchmarks: []benchkit.GoBench{{Package: "x/kpl", Name: "BenchmarkA", NsPerOp: 10, BytesPerOp: 0, AllocsPerOp: 0, MBPerSec: -1,
		Metrics: map[string]float64{"records/s": 1e6}}}, Packages: []string{"x/kpl", "x/consumer"}}
	return r
}

func verdicts(r *Report) map[string]Figure {
	out := map[string]Figure{}
	for _, f := range r.Figures {
		out[f.Name] = f
	}
	return out
}

func TestComputeFiguresVerdicts(t *testing.T) {
	r := syntheticReport()
	computeFigures(r)
	v := verdicts(r)
	check := func(name, verdict, text string) {
		t.Helper()
		f, ok := v[name]
		if !ok {
			t.Fatalf("no figure %q in %v", name, v)
		}
		if f.Verdict != verdict || !strings.Contains(f.Text+" "+f.Target, text) {
			t.Errorf("%s: %q %q, want %q containing %q", name, f.Verdict, f.Text, verdict, text)
		}
	}
	check("bridge -> null sink (median of 3)", "", "88,000 msg/s")
	check("bridge / patched baseline: drain rate (median of 2 interleaved pairs)", "", "0.85x")
	check("bridge / patched baseline: CPU per message (median of 2 interleaved pairs)", "", "2.50x")
	check("bridge CPU per message (process lifetime)", verdictMiss, "5.00 us") // the goal is 2.5 us
	check("bridge peak RSS", verdictPass, "50.0 MB")
	check("payload bytes out / bytes in (bridge metrics)", verdictPass, "1.0200")
	check("payload bytes out / bytes in (null sink's count)", verdictPass, "1.0200")
	check("Kinesis records per 1k messages", "", "10.00")
	check("exact-once at the null sink", verdictPass, "1000/1000 once")
	check("1 shard(s), throttled like Kinesis", "", "4,000 msg/s")
	check("4 shard(s), throttled like Kinesis", verdictPass, ">= 6,000")
	check("16 shard(s), throttled like Kinesis", verdictPass, "76,000") // reached 0.85 x 88k
	check("20,000 msg/s, max-buffered-time 20ms (null)", verdictPass, "p99 44.0")
	check("20,000 msg/s, max-buffered-time 100ms (null)", verdictMiss, "p99 130.0")
	check("5,000 msg/s, max-buffered-time 20ms (null)", "", "p99 80.0")
	check("kpl.A", "", "1,000,000 records/s")
	check("consumer", "", "no benchmarks")
	if !r.OK {
		t.Fatalf("report not OK: %v", r.Errors)
	}

	// Misses and failures.
	r = syntheticReport()
	r.Drains[1].Rate, r.Drains[3].Rate, r.Drains[4].Rate = 50_000, 50_000, 50_000
	r.Drains[4].CPUMicrosPerMsg, r.Drains[1].CPUMicrosPerMsg = 9, 9
	r.Drains[4].MaxRSSMB = 250
	bad := *r.Drains[4].Verification
	bad.OK, bad.Duplicates = false, 1
	r.Drains[4].Verification = &bad
	r.Drains[7].Rate = 5000 // 4 shards barely faster than 1
	computeFigures(r)
	v = verdicts(r)
	check("bridge / patched baseline: drain rate (median of 2 interleaved pairs)", "", "0.50x")
	check("bridge CPU per message (process lifetime)", verdictMiss, "9.00 us")
	check("bridge peak RSS", verdictMiss, "250.0 MB")
	check("exact-once at the null sink", verdictFail, "1 dup")
	check("4 shard(s), throttled like Kinesis", verdictMiss, "5,000 msg/s")
	if r.OK {
		t.Fatal("a failed exact-once check left the report OK")
	}
	if !strings.Contains(strings.Join(r.Notes, "\n"), "exact-once check failed") {
		t.Errorf("notes %v", r.Notes)
	}

	// Sink and bridge disagreeing on bytes is an instrument failure.
	r = syntheticReport()
	st := *r.Drains[1].SinkStats
	st.RecordBytes++
	r.Drains[1].SinkStats = &st
	computeFigures(r)
	if v := verdicts(r)["payload bytes out / bytes in (null sink's count)"]; v.Verdict != verdictFail || r.OK {
		t.Errorf("disagreeing byte counts: %+v", v)
	}
}

func TestPrintAndWriteReport(t *testing.T) {
	r := syntheticReport()
	r.Command = []string{"nsqk", "bench", "--quick"}
	computeFigures(r)
	var out bytes.Buffer
	printReport(&out, r)
	s := out.String()
	for _, f := range r.Figures {
		if !strings.Contains(s, f.Name) || !strings.Contains(s, f.Text) {
			t.Errorf("figure %q (%q) not printed", f.Name, f.Text)
		}
	}
	for _, want := range []string{"Test CPU, 2 cores", "nsqk bench --quick", "[drain]", "[kinesis]", "[shards]", "[latency]", "[micro]", "MISS", "PASS"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	// Every row is aligned: the verdict column starts at the same offset.
	var at int
	for _, line := range strings.Split(s, "\n") {
		if i := strings.Index(line, "  PASS"); i > 0 && strings.HasSuffix(line, "PASS") {
			if at != 0 && i != at {
				t.Errorf("misaligned row: %q", line)
			}
			at = i
		}
	}

	path := filepath.Join(t.TempDir(), "sub", "report.json")
	if err := writeReport(path, r); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Figures) != len(r.Figures) || back.Drains[1].Verification == nil || back.Methods["drain"] == "" {
		t.Fatalf("round trip lost data")
	}
}

func TestDrainsOf(t *testing.T) {
	r := &Report{Drains: []drainResult{{Name: "bridge-null"}, {Name: "bridge-null-2"}, {Name: "bridge-null-latency"},
		{Name: "bridge-kinesalite"}, {Name: "baseline-10"}, {Name: "baseline-"}}}
	names := func(ds []drainResult) string {
		var n []string
		for _, d := range ds {
			n = append(n, d.Name)
		}
		return strings.Join(n, ",")
	}
	if got := names(r.drainsOf("bridge-null")); got != "bridge-null,bridge-null-2" {
		t.Fatal(got)
	}
	if got := names(r.drainsOf("baseline")); got != "baseline-10" {
		t.Fatal(got)
	}
	if got := names(r.drainsOf("bridge-null-latency")); got != "bridge-null-latency" {
		t.Fatal(got)
	}
}

func TestQuickDefaults(t *testing.T) {
	o := options{messages: 1_000_000, smallMessages: 200_000, latencyFor: 20 * time.Second, latencyWarmup: 3 * time.Second, repeat: 3, quick: true}
	o.applyQuick(map[string]bool{"messages": true})
	if o.messages != 1_000_000 || o.smallMessages != 20_000 || o.scaleMessages != 100_000 || o.latencyFor != 5*time.Second || o.repeat != 1 {
		t.Fatalf("%+v", o)
	}
	o = options{messages: 5, smallMessages: 5, maxInFlight: 1, shards: 1, repeat: 1, users: 1, shardCounts: "1,x",
		latencyRates: "1", latencyMBT: "20ms", latencyFor: time.Second, skip: "nope"}
	err := o.validate()
	if err == nil || !strings.Contains(err.Error(), "nope") || !strings.Contains(err.Error(), "shard-counts") {
		t.Fatalf("validate: %v", err)
	}
}

func TestStreamOf(t *testing.T) {
	for body, want := range map[string]string{
		`{"Records":[{"Data":"eyJ1c2VyX2lkIjoidTAwMDAwMDAwMSJ9","PartitionKey":"u000000001"}],"StreamName":"nsqk-bench-4-2"}`: "nsqk-bench-4-2",
		`{"StreamARN":"arn:aws:kinesis:us-east-1:123456789012:stream/nsqk-bench-4-3"}`:                                        "nsqk-bench-4-3",
		`{"Records":[]}`: "",
	} {
		if got := streamOf([]byte(body)); got != want {
			t.Errorf("streamOf(%s) = %q, want %q", body, got, want)
		}
	}
}

func TestScaleFiguresVerdicts(t *testing.T) {
	ok := nullsink.Verification{Expected: 1000, Received: 1000, Unique: 1000, OK: true}
	bad := nullsink.Verification{Expected: 1000, Received: 999, Unique: 999, Missing: 1}
	r := newReport(options{messages: 1000})
	run := func(name string, rate float64, v ...nullsink.Verification) scaleResult {
		return scaleResult{Name: name, Drained: true, Messages: 1000, Rate: rate, DrainSeconds: 1, Verification: v,
			Bridges: []scaleProc{{Name: name, Messages: 1000, CPUMicrosPerMsg: 5}}}
	}
	r.Scaling = []scaleResult{run("routes-1", 100_000, ok), run("routes-4", 85_000, ok, ok, ok, ok),
		run("groups-1", 50_000, ok), run("groups-2", 90_000, ok, bad)}
	computeFigures(r)
	v := verdicts(r)
	if f := v["4 routes / 1 route: drain rate"]; f.Verdict != verdictMiss || f.Text != "0.85x" {
		t.Errorf("routes ratio %+v", f)
	}
	if f := v["two bridges on two nodes / one bridge on one node: drain rate"]; f.Verdict != verdictPass || f.Text != "1.80x" {
		t.Errorf("groups ratio %+v", f)
	}
	if r.OK {
		t.Error("a missing message in groups-2 must fail the report")
	}
	r.Scaling[3].Verification[1] = ok
	computeFigures(r)
	if !r.OK {
		t.Errorf("report not OK: %v", r.Notes)
	}

	// Repetitions: the ratio is the median of the i-th runs' ratios (1.1, 0.8, 1.0 -> 1.0).
	r.Scaling = []scaleResult{run("routes-1-1", 100_000, ok), run("routes-4-1", 110_000, ok),
		run("routes-1-2", 100_000, ok), run("routes-4-2", 80_000, ok), run("routes-1-3", 50_000, ok), run("routes-4-3", 50_000, ok)}
	computeFigures(r)
	v = verdicts(r)
	if f := v["4 routes / 1 route: drain rate (median of 3)"]; f.Verdict != verdictPass || f.Text != "1.00x" {
		t.Errorf("routes ratio over repetitions %+v", f)
	}
	if f := v["1 route, one bridge (median of 3)"]; f.Value == nil || *f.Value != 100_000 {
		t.Errorf("median rate %+v", f)
	}
}
