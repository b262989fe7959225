package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/nsqk/nsqk/cmd/nsqk/internal/benchkit"
)

// Report is the JSON report and the source of the printed table.
type Report struct {
	Command           []string             `json:"command"`
	Started           time.Time            `json:"started"`
	Finished          time.Time            `json:"finished"`
	Machine           benchkit.Machine     `json:"machine"`
	Build             buildInfo            `json:"build"`
	CompareBuild      *buildInfo           `json:"compare_build,omitempty"` // --compare-exe
	LoadAvgEnd        []float64            `json:"loadavg_end"`
	Settings          map[string]any       `json:"settings"`
	Messages          *messageSet          `json:"messages,omitempty"`
	SmallMessages     *messageSet          `json:"small_messages,omitempty"`
	Drains            []drainResult        `json:"drains"`
	Scaling           []scaleResult        `json:"scaling,omitempty"`
	Latency           []latencyResult      `json:"latency"`
	Micro             *benchkit.GoBenchRun `json:"micro,omitempty"`
	Profile           *profileResult       `json:"profile,omitempty"`
	Skipped           []string             `json:"skipped,omitempty"`
	SectionSeconds    map[string]float64   `json:"section_seconds"`
	OrchestratorTotal usageJSON            `json:"orchestrator_total"`
	Figures           []Figure             `json:"figures"`
	Notes             []string             `json:"notes"`
	Errors            []string             `json:"errors,omitempty"`
	Methods           map[string]string    `json:"methods"`
	// OK: every correctness check passed and no section failed.
	OK bool `json:"ok"`
}

type usageJSON struct {
	UserSeconds   float64 `json:"user_cpu_seconds"`
	SystemSeconds float64 `json:"system_cpu_seconds"`
	MaxRSSMB      float64 `json:"max_rss_mb"`
}

func usageOf(u benchkit.Usage) usageJSON {
	return usageJSON{u.User.Seconds(), u.System.Seconds(), float64(u.MaxRSS) / (1 << 20)}
}

// Figure is one row of the table.
type Figure struct {
	Section string   `json:"section"`
	Name    string   `json:"name"`
	Value   *float64 `json:"value,omitempty"` // nil when not measured
	Unit    string   `json:"unit,omitempty"`
	Text    string   `json:"text"` // the value as printed
	Target  string   `json:"target,omitempty"`
	Verdict string   `json:"verdict,omitempty"` // PASS, MISS, FAIL or empty (information)
}

func newReport(o options) *Report {
	return &Report{
		Command: o.args, Started: time.Now(), SectionSeconds: map[string]float64{},
		Settings: map[string]any{
			"messages": o.messages, "quick": o.quick, "skip": o.skipList(), "max_in_flight": o.maxInFlight,
			"max_buffered_time": o.maxBuffered.String(), "shards": o.shards, "repeat": o.repeat, "users": o.users,
			"seed": o.seed, "small_messages": o.smallMessages, "scale_messages": o.scaleMessages, "shard_counts": o.shardCounts,
			"latency_rates": o.latencyRates, "latency_max_buffered_times": o.latencyMBT,
			"latency_duration": o.latencyFor.String(), "latency_warmup": o.latencyWarmup.String(),
			"profile": o.profile, "released_baseline": o.released, "compare_exe": o.compareExe, "bridge_args": o.bridgeArgs, "sink_latency": o.sinkLatency.String(), "go_env": goEnvironment(),
		},
		Methods: methodsOf,
	}
}

// goEnvironment lists Go runtime settings inherited by the children, which change what is measured.
func goEnvironment() map[string]string {
	out := map[string]string{}
	for _, k := range []string{"GOGC", "GOMEMLIMIT", "GOMAXPROCS", "GODEBUG"} {
		if v, ok := os.LookupEnv(k); ok {
			out[k] = v
		}
	}
	return out
}

var methodsOf = map[string]string{
	"processes": "nsqd (embedded) and the null sink run in this process; the measured program runs as a child process " +
		"(this executable re-run as `nsqk bridge ...` or `nsqk bench baseline ...`), so its CPU time and peak RSS are its own.",
	"messages": "location JSON from shared/location (seeded), published once in-process with nsqd.Topic.PutMessages in batches of 200 " +
		"(the MPUB code path minus TCP, one publisher so per-user order in NSQ is seq order) to a topic whose channels - one per run - " +
		"existed first; every queue stays in memory (mem-queue-size >= messages).",
	"drain": "drain time = from the first delivery (channel depth drops below N) to depth + in-flight + deferred = 0 (every message " +
		"FINished), read in-process from nsqd every 2 ms; rate = N / drain time. Start-up (spawn to first delivery) is reported apart.",
	"baseline": "the physical limit: a go-nsq consumer with the bridge's NSQ settings (max-in-flight, 60 s msg timeout, 25 ms output " +
		"buffer timeout, one handler goroutine) whose handler returns at once, so go-nsq FINs every message on delivery.",
	"released": "--released-baseline: the same do-nothing consumer built against go-nsq v1.1.0 as released (cmd/nsqk/internal/bench/released, " +
		"its own module, so the patch in third_party/go-nsq does not apply), drained right after the patched baseline in every repetition.",
	"ratios": "a ratio pairs the i-th drain of one kind with the i-th of the other (run one after the other on the same messages, so both saw " +
		"nearly the same load from the rest of the machine) and gives the median over the repetitions; absolute figures move with the host.",
	"compare": "--compare-exe: the bridge of an other nsqk binary drains into its own null sink right after this one's in every repetition " +
		"(and, with --profile, is profiled the same way).",
	"stages": "--profile: the bridge's pprof CPU profile of one more drain, each sample assigned to the stage of the innermost function on its " +
		"stack that a rule in stages.go names (functions no rule names - allocation, md5.block, syscalls, locks - count for their caller); " +
		"us/msg = the stage's sampled CPU / messages drained (the profile covers the process's whole life).",
	"cpu": "child CPU = user + system time from its rusage after exit (whole life: start-up, drain, graceful shutdown) / N; " +
		"'drain only' = /proc/<pid>/stat utime+stime between first delivery and drained (10 ms ticks).",
	"noise": "other CPU = the machine's busy time (/proc/stat) during a run minus the child's, this process's and the emulator's; " +
		"runs where other processes took more than 15% of all cores are named in the notes.",
	"rss": "peak RSS = the child's VmHWM (/proc/<pid>/status) read every 20 ms until it exits; ru_maxrss is not usable: Linux carries " +
		"the parent's RSS high-water mark into a child Go starts with clone(CLONE_VM|CLONE_VFORK), so it would report this process's size. " +
		"The timeline samples VmRSS every 100 ms.",
	"bytes": "payload out/in = nsqk_bridge_bytes_out_total (data + partition key of accepted records) / nsqk_bridge_bytes_in_total (NSQ bodies), cross-checked with the sink's own counts; wire = PutRecords HTTP body bytes (JSON, base64 data) / NSQ bytes.",
	"exact-once": "the null sink de-aggregates every accepted record and checks each (user_id, seq) against what was published: " +
		"duplicates, missing, per-user order in stream order per shard, partition key = user_id, key hashed into the shard that stored it.",
	"latency": "offered rate paced by a publisher in this process (a batch every 5 ms); latency = the bridge's nsqk_bridge_ack_latency_seconds " +
		"(NSQ publish timestamp to Kinesis acceptance) minus a snapshot at the end of the warm-up, quantiles interpolated in its buckets; " +
		"'sink' = exact percentiles of arrival at the null sink minus the message's ts (ms resolution). The null sink answers in well under " +
		"a millisecond, so these are the bridge's own batching and NSQ delivery latency, not an emulator's.",
	"shards": "the null sink throttles like Kinesis (per shard 1 MiB/s and 1000 records/s, one second of burst, ProvisionedThroughputExceededException per entry); " +
		"utilisation = accepted record bytes per second / (shards x 1 MiB/s).",
	"null-latency": "the same null sink, answering every PutRecords after --kinesis-latency (default 20 ms, what Kinesis takes): with a zero-latency sink " +
		"a client's batching faults stay hidden.",
	"routes": "--scale-messages in total: published to one topic, drained by a bridge with one route (config file, one stream), then the same number split over 4 topics, " +
		"drained by one bridge with 4 routes into 4 streams; the null sinks (one per stream) sit behind one endpoint that passes each request to its stream's sink. " +
		"Drain time runs from the first delivery on any channel to every channel empty; rate = all messages / drain time.",
	"groups": "an embedded nsqlookupd and two embedded nsqd nodes in this process, on ports whose rendezvous hash gives one node to each partition; " +
		"--scale-messages per node. One bridge (through nsqlookupd) drains a topic that only one node holds; then two bridges with --nsqd-partition 0/2 and 1/2 " +
		"drain a topic both nodes hold, each into its own null sink that verifies its node's messages (a bridge reading the other node would fail the check). " +
		"nsqd, nsqlookupd and the sinks run in this process and compete with the bridges for the same cores: the orchestrator row says how much they took.",
	"kinesalite": "kinesalite (node, in-memory) started via shared/local/kinesislocal, stream created with --shards; it competes for the same cores, " +
		"so its rate is a floor, not the bridge's limit; read back afterwards with GetRecords and verified like the null sink.",
}

func (r *Report) fail(format string, a ...any) {
	r.Errors = append(r.Errors, fmt.Sprintf(format, a...))
}

func (r *Report) note(format string, a ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, a...))
}

func (r *Report) add(section, name string, v float64, unit, text, target, verdict string) {
	f := Figure{Section: section, Name: name, Unit: unit, Text: text, Target: target, Verdict: verdict}
	if !math.IsNaN(v) && !math.IsInf(v, 0) {
		f.Value = &v
	}
	r.Figures = append(r.Figures, f)
}

// writeReport writes the JSON report.
func writeReport(path string, r *Report) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
