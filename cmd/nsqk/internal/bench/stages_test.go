package bench

import (
	"strings"
	"testing"

	"github.com/google/pprof/profile"
)

func TestStageOf(t *testing.T) {
	for _, c := range []struct {
		stack []string // leaf first
		want  string
	}{
		{[]string{"crypto/md5.block", "crypto/md5.Sum", "github.com/nsqk/nsqk/shared/shardmap.HashKey", "github.com/nsqk/nsqk/shared/bridge.(*Bridge).HandleMessage"},
			"routing (MD5 of the key, shard lookup)"},
		{[]string{"crypto/md5.block", "github.com/nsqk/nsqk/shared/kpl.(*Aggregator).Flush", "github.com/nsqk/nsqk/shared/bridge.(*Bridge).seal",
			"github.com/nsqk/nsqk/shared/bridge.(*Bridge).HandleMessage"}, "aggregation and the aggregate's MD5"},
		{[]string{"runtime.mallocgc", "github.com/tidwall/gjson.GetBytes", "github.com/nsqk/nsqk/shared/bridge.(*keyExtractor).extract"},
			"key extraction and JSON validation"},
		// An assist inside an allocation is GC, whoever allocated.
		{[]string{"runtime.scanobject", "runtime.gcAssistAlloc", "runtime.mallocgc", "github.com/tidwall/gjson.GetBytes"},
			"GC (background marking, assists, sweeping)"},
		// The SHA-256 of the body runs inside the SDK's middleware stack: innermost wins.
		{[]string{"crypto/internal/fips140/sha256.blockSHANI", "github.com/aws/aws-sdk-go-v2/aws/signer/v4.(*ComputePayloadSHA256).HandleFinalize",
			"github.com/aws/aws-sdk-go-v2/service/kinesis.(*Client).PutRecords", "github.com/nsqk/nsqk/shared/bridge.(*Bridge).send"},
			"request signing (SHA-256 of the body, SigV4)"},
		{[]string{"encoding/base64.(*Encoding).Encode", "github.com/aws/aws-sdk-go-v2/service/kinesis.(*PutRecordsInput).Serialize",
			"github.com/aws/aws-sdk-go-v2/aws/signer/v4.(*ComputePayloadSHA256).HandleFinalize"}, "request encoding (JSON, base64)"},
		{[]string{"internal/runtime/syscall/linux.Syscall6", "net/http.(*persistConn).writeLoop"}, "HTTP and the rest of the SDK (transport, retries, response)"},
		{[]string{"github.com/prometheus/client_golang/prometheus.(*counter).Add", "github.com/nsqk/nsqk/shared/bridge.(*Bridge).complete"},
			"metrics (Prometheus, EMF, /metrics)"},
		{[]string{"sync.(*Mutex).Lock", "github.com/nsqk/nsqk/shared/bridge.(*Bridge).complete"}, "FIN bookkeeping (lanes, acks, ordering fence)"},
		{[]string{"internal/runtime/syscall/linux.Syscall6", "github.com/nsqio/go-nsq.(*Conn).writeLoop"}, "NSQ I/O and FIN (go-nsq read/write loops)"},
		{[]string{"time.Now", "github.com/nsqk/nsqk/shared/bridge.(*Bridge).HandleMessage", "github.com/nsqio/go-nsq.(*Consumer).handlerLoop"},
			"bridge handler, other (locks, clock, bookkeeping)"},
		{[]string{"runtime.futex", "runtime.findRunnable", "runtime.schedule"}, otherStage},
	} {
		if got := stageOf(c.stack); got != c.want {
			t.Errorf("%s: %q, want %q", c.stack[0], got, c.want)
		}
	}
}

func TestBreakdownOfProfile(t *testing.T) {
	fn := func(id uint64, name string) *profile.Function { return &profile.Function{ID: id, Name: name} }
	md5, hash, gj := fn(1, "crypto/md5.block"), fn(2, "github.com/nsqk/nsqk/shared/shardmap.HashKey"), fn(3, "github.com/tidwall/gjson.ValidBytes")
	loc := func(id uint64, f ...*profile.Function) *profile.Location {
		l := &profile.Location{ID: id}
		for _, x := range f {
			l.Line = append(l.Line, profile.Line{Function: x})
		}
		return l
	}
	l1, l2, l3 := loc(1, md5), loc(2, hash), loc(3, gj)
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		Sample: []*profile.Sample{
			{Location: []*profile.Location{l1, l2}, Value: []int64{3, 30_000_000}},
			{Location: []*profile.Location{l3}, Value: []int64{1, 10_000_000}},
		},
		Location: []*profile.Location{l1, l2, l3}, Function: []*profile.Function{md5, hash, gj},
	}
	b, err := breakdownOfProfile(p, "x.pprof", 10_000)
	if err != nil {
		t.Fatal(err)
	}
	if b.CPUSeconds != 0.04 || b.MicrosPerMsg != 4 {
		t.Fatalf("total %.3f s, %.2f us/msg; want 0.04 s, 4 us/msg", b.CPUSeconds, b.MicrosPerMsg)
	}
	got := map[string]stageShare{}
	for _, s := range b.Stages {
		got[s.Stage] = s
	}
	if s := got["routing (MD5 of the key, shard lookup)"]; s.Percent != 75 || s.MicrosPerMsg != 3 || s.Samples != 3 {
		t.Errorf("routing: %+v", s)
	}
	if s := got["key extraction and JSON validation"]; s.Percent != 25 || s.MicrosPerMsg != 1 {
		t.Errorf("key extraction: %+v", s)
	}
	if len(b.Stages) != len(stages)+1 || !strings.Contains(b.Top[0], "crypto/md5.block") {
		t.Errorf("stages %d, top %v", len(b.Stages), b.Top)
	}
}

// The released baseline and a compared bridge are reported as ratios of interleaved pairs.
func TestRatioFigures(t *testing.T) {
	r := syntheticReport()
	r.Drains = append(r.Drains,
		drainResult{Name: "baseline-released-1", Kind: "baseline", Messages: 1000, Received: 1000, Drained: true, Rate: 50_000, CPUMicrosPerMsg: 8},
		drainResult{Name: "baseline-released-2", Kind: "baseline", Messages: 1000, Received: 1000, Drained: true, Rate: 40_000, CPUMicrosPerMsg: 10},
		drainResult{Name: "bridge-compared-1", Kind: "bridge", Sink: sinkNull, Messages: 1000, Drained: true, Rate: 60_000, CPUMicrosPerMsg: 8,
			Verification: r.Drains[1].Verification},
		drainResult{Name: "bridge-compared-2", Kind: "bridge", Sink: sinkNull, Messages: 1000, Drained: true, Rate: 40_000, CPUMicrosPerMsg: 12,
			Verification: r.Drains[1].Verification},
	)
	r.Drains[1].CPUMicrosPerMsg = 2          // bridge-null-1: within the goal
	r.Drains[len(r.Drains)-1].MaxRSSMB = 500 // the compared bridge's RSS is not this bridge's
	l := r.Latency[1]
	l.Name, l.Compared, l.CPUMicrosPerMsg, l.MaxRSSMB, r.Latency[1].CPUMicrosPerMsg = l.Name+"-compared", true, 5, 400, 4
	r.Latency = append(r.Latency[:2], l, r.Latency[2]) // right after the run it pairs with
	computeFigures(r)
	v := verdicts(r)
	want := map[string]string{
		"go-nsq as released: same consumer, FIN at once (median of 2)":                                "45,000 msg/s",
		"bridge / go-nsq as released: drain rate (median of 2 interleaved pairs)":                     "1.90x", // 90/50, 80/40
		"bridge / go-nsq as released: CPU per message (median of 2 interleaved pairs)":                "0.42x", // 2/8, 6/10
		"patched baseline / go-nsq as released: drain rate (median of 2 interleaved pairs)":           "2.25x",
		"bridge / compared bridge: CPU per message (median of 2 interleaved pairs)":                   "0.38x", // 2/8, 6/12
		"bridge CPU per message minus the compared bridge's (medians)":                                "-5.00 us",
		"bridge CPU per message (process lifetime)":                                                   "5.00 us", // 2, 6, 5
		"bridge / compared bridge: CPU per message at a fixed 20,000 msg/s (max-buffered-time 100ms)": "0.80x (4.00 / 5.00 us)",
		"bridge peak RSS, any run": "60.0 MB (bridge-kinesalite)",
	}
	for name, text := range want {
		if f, ok := v[name]; !ok || f.Text != text {
			t.Errorf("%s: %q, want %q", name, f.Text, text)
		}
	}
	r.Drains[3].CPUMicrosPerMsg, r.Drains[4].CPUMicrosPerMsg = 2.5, 2
	computeFigures(r)
	if f := verdicts(r)["bridge CPU per message (process lifetime)"]; f.Verdict != verdictPass {
		t.Errorf("2.5 us meets the goal: %+v", f)
	}
}
