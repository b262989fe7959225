package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/nsqk/nsqk/cmd/nsqk/internal/benchkit"
	"github.com/nsqk/nsqk/cmd/nsqk/internal/nullsink"
	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/shardmap"
)

// mainDrains alternates the baseline and the bridge into the null sink, --repeat times each, on
// the same pre-published messages.
func (b *bench) mainDrains(ctx context.Context) error {
	for i := 1; i <= b.o.repeat && ctx.Err() == nil; i++ {
		if b.o.on("baseline") {
			name := repeatName("baseline", i, b.o.repeat)
			b.r.Drains = append(b.r.Drains, b.drain(ctx, drainSpec{name: name, topic: topicName, messages: b.main.Count}))
			if b.releasedExe != "" {
				name := repeatName("baseline-released", i, b.o.repeat)
				b.r.Drains = append(b.r.Drains, b.drain(ctx, drainSpec{name: name, topic: topicName, messages: b.main.Count, released: true}))
			}
		}
		if b.o.on("null") {
			res, err := b.nullDrain(ctx, repeatName("bridge-null", i, b.o.repeat), topicName, b.main, b.o.shards, false, nil)
			if err != nil {
				return err
			}
			b.r.Drains = append(b.r.Drains, res)
			if b.compareExe != "" {
				res, err := b.nullDrainWith(ctx, repeatName("bridge-compared", i, b.o.repeat), topicName, b.main, b.o.shards, false,
					b.o.sinkLatency, nil, nil, b.compareExe)
				if err != nil {
					return err
				}
				b.r.Drains = append(b.r.Drains, res)
			}
		}
	}
	return nil
}

// latencyDrain drains the smaller message set into a null sink that answers every PutRecords
// after --kinesis-latency, as Kinesis does in tens of milliseconds: how much of the bridge's
// throughput survives a realistic round trip (the zero-latency null sink hides batching faults).
func (b *bench) latencyDrain(ctx context.Context) error {
	res, err := b.nullDrainWith(ctx, "bridge-null-latency", smallTopic, b.small, b.o.shards, false, b.o.kinesisLatency, nil, nil, "")
	if err != nil {
		return err
	}
	b.r.Drains = append(b.r.Drains, res)
	return nil
}

// nullDrain drains a channel with the bridge into a fresh null sink that verifies every message.
func (b *bench) nullDrain(ctx context.Context, name, topic string, set *messageSet, shards int, throttle bool,
	profile func(*childProc) func()) (drainResult, error) {
	return b.nullDrainWith(ctx, name, topic, set, shards, throttle, b.o.sinkLatency, nil, profile, "")
}

// nullDrainWith is nullDrain with the sink's answer latency, extra bridge flags and the bridge
// program (exe; "" is the nsqk under test).
func (b *bench) nullDrainWith(ctx context.Context, name, topic string, set *messageSet, shards int, throttle bool,
	latency time.Duration, extraArgs []string, profile func(*childProc) func(), exe string) (drainResult, error) {
	v := set.verifier()
	srv, err := nullsink.Start(nullsink.Config{Stream: streamName, Shards: shards, Throttle: throttle, Verifier: v, Latency: latency})
	if err != nil {
		return drainResult{}, err
	}
	defer srv.Close()
	kind := sinkNull
	switch {
	case throttle:
		kind = sinkThrottled
	case latency > 0:
		kind = fmt.Sprintf("null+%s", latency)
	}
	res := b.drain(ctx, drainSpec{name: name, topic: topic, messages: set.Count, sink: kind, shards: shards,
		server: srv, endpoint: srv.URL, extraArgs: extraArgs, profile: profile, exe: exe})
	vr := v.Result()
	res.Verification = &vr
	if !vr.OK {
		b.say("   %s: exact-once check FAILED: %s %v", name, vr.Summary(), vr.Problems)
	}
	return res, nil
}

// kinesaliteDrain drains the same messages with the bridge into kinesalite, then reads the
// stream back and verifies it.
func (b *bench) kinesaliteDrain(ctx context.Context) error {
	em, err := kinesislocal.Start(ctx, kinesislocal.Options{Stderr: nil})
	if err != nil {
		return err
	}
	defer em.Close()
	kc := em.Client()
	if err := kinesislocal.CreateStream(ctx, kc, streamName, int32(b.o.shards)); err != nil {
		return err
	}
	res := b.drain(ctx, drainSpec{name: "bridge-kinesalite", topic: topicName, messages: b.main.Count, sink: sinkKinesalite,
		shards: b.o.shards, endpoint: em.Endpoint, emulatorPID: em.Pid()})
	if res.Drained && b.o.verifyReadback {
		t0 := time.Now()
		vr, err := readBackVerify(ctx, kc, b.main.verifier())
		res.ReadbackSeconds = time.Since(t0).Seconds()
		if err != nil {
			res.Error = strings.TrimSpace(res.Error + "\nread back: " + err.Error())
		} else {
			res.Verification = &vr
			b.say("   read back %d user records from kinesalite in %.1fs: %s", vr.Received, res.ReadbackSeconds, okText(vr.OK))
		}
	}
	b.r.Drains = append(b.r.Drains, res)
	return nil
}

// readBackVerify reads every shard from TRIM_HORIZON and feeds the user records to v in stream
// order per shard.
func readBackVerify(ctx context.Context, kc *kinesis.Client, v *nullsink.Verifier) (nullsink.Verification, error) {
	m, err := shardmap.Load(ctx, kc, streamName)
	if err != nil {
		return nullsink.Verification{}, err
	}
	v.CheckShards(m)
	var d kpl.Deaggregator
	var urs []kpl.UserRecord
	for i, sh := range m.Shards() {
		recs, err := kinesislocal.ReadShard(ctx, kc, streamName, sh.ID)
		if err != nil {
			return nullsink.Verification{}, err
		}
		for _, r := range recs {
			var agg bool
			urs, agg, _ = d.Deaggregate(urs[:0], r.Data)
			for _, u := range urs {
				key := u.PartitionKey
				switch {
				case !agg && r.PartitionKey != nil:
					key = []byte(*r.PartitionKey)
				case u.ExplicitHashKey != nil:
					key = nil // routed by hash key: the partition key need not be the user's
				}
				v.Observe(i, key, u.Data)
			}
		}
	}
	return v.Result(), nil
}

// shardScaling drains the shard topic with the bridge into a null sink that throttles like
// Kinesis (1 MiB/s and 1000 records/s per shard), once per shard count.
func (b *bench) shardScaling(ctx context.Context) error {
	counts, _ := b.o.shardCountList()
	for _, n := range counts {
		if ctx.Err() != nil {
			return nil
		}
		res, err := b.nullDrain(ctx, fmt.Sprintf("shards-%d", n), smallTopic, b.small, n, true, nil)
		if err != nil {
			return err
		}
		b.r.Drains = append(b.r.Drains, res)
	}
	return nil
}

// microBenchmarks parses `go test -bench` output.
func (b *bench) microBenchmarks(context.Context) error {
	f, err := os.Open(b.o.micro)
	if err != nil {
		return err
	}
	defer f.Close()
	run, err := benchkit.ParseGoBench(f)
	if err != nil {
		return err
	}
	b.r.Micro = &run
	b.say("   %d micro-benchmarks from %d packages (%s)", len(run.Benchmarks), len(run.Packages), b.o.micro)
	if len(run.Failures) > 0 {
		return fmt.Errorf("the micro-benchmark output reports failures: %s", strings.Join(run.Failures, "; "))
	}
	return nil
}

// profileRun drains the "profile" channel once more with profiling on (so no measured figure is
// perturbed): the bridge's CPU profile through its --cpu-profile flag if it has one, otherwise
// perf sampling the child; and this process's own pprof CPU profile (nsqd + null sink). A pprof
// profile is split into stages (stages.go). With --compare-exe the compared bridge is profiled
// the same way on its own channel.
func (b *bench) profileRun(ctx context.Context) error {
	if b.main == nil {
		return errors.New("no main message set (all drain sections skipped)")
	}
	dir := filepath.Join(b.o.dir, "profiles")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	p := &profileResult{}
	b.r.Profile = p
	var extra []string
	if b.bridgeHasFlag(b.exe, "cpu-profile") {
		p.Bridge = filepath.Join(dir, "bridge.pprof")
		p.Method = "bridge --cpu-profile (runtime/pprof)"
		extra = []string{"--cpu-profile", p.Bridge}
	}
	var perfStop func()
	hook := func(c *childProc) func() {
		if extra != nil {
			return nil
		}
		if _, err := exec.LookPath("perf"); err != nil {
			p.Method = "none: the bridge has no --cpu-profile flag and perf is not installed"
			return nil
		}
		p.Bridge = filepath.Join(dir, "bridge.perf.data")
		p.Method = "perf record -F 999 -g (the bridge has no --cpu-profile flag yet)"
		cmd := exec.Command("perf", "record", "-F", "999", "-g", "-o", p.Bridge, "-p", fmt.Sprint(c.pid()))
		logf, _ := os.Create(filepath.Join(dir, "perf-record.log"))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			p.Method = "perf failed to start: " + err.Error()
			return nil
		}
		perfStop = func() {
			cmd.Process.Signal(syscall.SIGINT)
			cmd.Wait()
			logf.Close()
		}
		return perfStop
	}
	self := filepath.Join(dir, "orchestrator.pprof")
	sf, err := os.Create(self)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(sf); err != nil {
		sf.Close()
		return err
	}
	var res drainResult
	res, err = b.nullDrainWith(ctx, "profile", topicName, b.main, b.o.shards, false, b.o.sinkLatency, extra, hook, "")
	pprof.StopCPUProfile()
	sf.Close()
	if err != nil {
		return err
	}
	res.Profile = p.Bridge
	p.Orchestrator = self
	p.Run = &res
	switch {
	case strings.HasSuffix(p.Bridge, ".perf.data"):
		p.Top = perfTopOf(p.Bridge, filepath.Join(dir, "bridge.perf.txt"))
		p.Inspect = "perf report -i " + p.Bridge + "   (flat: " + filepath.Join(dir, "bridge.perf.txt") + ")"
	case p.Bridge != "":
		p.Inspect = "go tool pprof -top " + b.exe + " " + p.Bridge
		if p.Stages, err = breakdownOf(p.Bridge, res.Messages); err != nil {
			b.r.note("profile: no per-stage breakdown: %v", err)
		}
	}
	b.say("   profiles: bridge %s (%s), orchestrator %s", p.Bridge, p.Method, self)
	if b.compareExe != "" && ctx.Err() == nil {
		if !b.bridgeHasFlag(b.compareExe, "cpu-profile") {
			b.r.note("profile: the compared bridge (%s) has no --cpu-profile flag: not profiled", b.o.compareExe)
			return nil
		}
		path := filepath.Join(dir, "bridge-compared.pprof")
		res, err := b.nullDrainWith(ctx, "profile-compared", topicName, b.main, b.o.shards, false, b.o.sinkLatency,
			[]string{"--cpu-profile", path}, nil, b.compareExe)
		if err != nil {
			return err
		}
		res.Profile = path
		p.ComparedRun = &res
		if p.ComparedStages, err = breakdownOf(path, res.Messages); err != nil {
			b.r.note("profile: no per-stage breakdown of the compared bridge: %v", err)
		}
		b.say("   profile of the compared bridge: %s", path)
	}
	return nil
}

// profileResult says where the profiles of the profile run are.
type profileResult struct {
	Method       string       `json:"method"`
	Bridge       string       `json:"bridge,omitempty"`
	Orchestrator string       `json:"orchestrator"`
	Top          []string     `json:"top,omitempty"` // hottest symbols (perf), self time
	Inspect      string       `json:"inspect,omitempty"`
	Run          *drainResult `json:"run,omitempty"`
	// Stages is the per-stage breakdown of the bridge's pprof profile.
	Stages *breakdown `json:"stages,omitempty"`
	// The same for the --compare-exe bridge.
	ComparedRun    *drainResult `json:"compared_run,omitempty"`
	ComparedStages *breakdown   `json:"compared_stages,omitempty"`
}

// bridgeHasFlag asks `nsqk bridge -h` of an nsqk binary whether a flag exists.
func (b *bench) bridgeHasFlag(exe, name string) bool {
	cmd := exec.Command(exe, "bridge", "-h")
	cmd.Env = b.childEnv()
	out, _ := cmd.CombinedOutput()
	return strings.Contains(string(out), "-"+name+" ") || strings.Contains(string(out), "-"+name+"\n")
}

// perfTop writes `perf report` to txt and returns its top lines (self time per symbol).
func perfTopOf(data, txt string) []string {
	out, err := exec.Command("perf", "report", "--stdio", "--no-children", "--sort", "symbol", "-F", "overhead,sym", "-i", data).Output()
	if err != nil {
		return []string{"perf report failed: " + err.Error()}
	}
	os.WriteFile(txt, out, 0o644)
	var top []string
	for _, line := range strings.Split(string(out), "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "#") || !strings.Contains(t, "%") || strings.HasPrefix(t, "|") || strings.HasPrefix(t, "-") {
			continue
		}
		top = append(top, t)
		if len(top) == 25 {
			break
		}
	}
	return top
}
