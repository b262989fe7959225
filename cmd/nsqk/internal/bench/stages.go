package bench

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/google/pprof/profile"
)

// stage is one part of the bridge's work per message, recognised in a CPU profile by the
// functions on a sample's stack.
type stage struct {
	Name string
	// prefixes: a sample belongs to the stage of the innermost frame of its stack whose function
	// name starts with one of these (stages tried in order for each frame). Functions no rule names
	// (runtime.mallocgc, md5.block, syscalls, locks) count for the stage of their caller, so an
	// allocation in the JSON validator is key extraction and the MD5 in the aggregator is
	// aggregation.
	prefixes []string
}

// Package paths the rules below use.
const (
	bridgePkg = "github.com/nsqk/nsqk/shared/bridge."
	nsqPkg    = "github.com/nsqio/go-nsq."
	sdkPkg    = "github.com/aws/aws-sdk-go-v2/"
	kinPkg    = "github.com/aws/aws-sdk-go-v2/service/kinesis."
)

// stages are the parts of the per-stage breakdown, in the order they are tried on each frame.
var stages = []stage{
	{"GC (background marking, assists, sweeping)", []string{"runtime.gc", "runtime.bgsweep", "runtime.bgscavenge", "runtime.markroot",
		"runtime.scanobject", "runtime.greyobject", "runtime.sweepone", "runtime.(*gcWork)", "runtime.(*mspan).sweep", "runtime.(*sweepLocked)",
		"runtime.gcAssistAlloc", "runtime.wbBufFlush"}},
	{"metrics (Prometheus, EMF, /metrics)", []string{"github.com/prometheus/", bridgePkg + "(*cloudWatch)", "github.com/nsqk/nsqk/shared/emf."}},
	{"request signing (SHA-256 of the body, SigV4)", []string{sdkPkg + "aws/signer/", "crypto/sha256.", "crypto/internal/fips140/sha256.", "crypto/hmac."}},
	{"request encoding (JSON, base64)", []string{kinPkg + "(*PutRecordsInput).Serialize", kinPkg + "serializePutRecords", kinPkg + "awsAwsjson11_serialize",
		"github.com/aws/aws-sdk-go-v2/service/kinesis/types.(*PutRecordsRequestEntry)",
		"github.com/aws/smithy-go/encoding/json.", "encoding/base64.", "github.com/segmentio/asm/base64.", "github.com/nsqk/nsqk/shared/putrecords.",
		"github.com/aws/smithy-go/transport/http/protocol/internal/json.(*ShapeSerializer)"}},
	{"routing (MD5 of the key, shard lookup)", []string{"github.com/nsqk/nsqk/shared/shardmap.", bridgePkg + "(*Bridge).route", bridgePkg + "(*Bridge).stickyShard"}},
	{"aggregation and the aggregate's MD5", []string{"github.com/nsqk/nsqk/shared/kpl.", bridgePkg + "(*Bridge).seal"}},
	{"key extraction and JSON validation", []string{bridgePkg + "(*keyExtractor)", "github.com/tidwall/gjson.", bridgePkg + "checkKey", bridgePkg + "depthWithin"}},
	{"HTTP and the rest of the SDK (transport, retries, response)", []string{"net/http.", sdkPkg, "github.com/aws/smithy-go", "net/textproto."}},
	{"FIN bookkeeping (lanes, acks, ordering fence)", []string{bridgePkg + "(*Bridge).complete", bridgePkg + "(*Bridge).buildRequest",
		bridgePkg + "(*Bridge).sendLoop", bridgePkg + "(*Bridge).send", bridgePkg + "(*fence)", bridgePkg + "(*idRing)", bridgePkg + "(*slot)",
		nsqPkg + "(*Message).Finish", nsqPkg + "(*Message).Touch", bridgePkg + "(*Bridge).flushLoop", bridgePkg + "(*Bridge).sealDue"}},
	{"NSQ I/O and FIN (go-nsq read/write loops)", []string{nsqPkg}},
	{"bridge handler, other (locks, clock, bookkeeping)", []string{bridgePkg}},
}

// otherStage collects what no rule claims: the scheduler, netpoll, idle spinning, start-up.
const otherStage = "runtime and other (scheduler, netpoll, start-up)"

// stageShare is one stage of a breakdown.
type stageShare struct {
	Stage        string  `json:"stage"`
	Samples      int64   `json:"samples"`
	CPUSeconds   float64 `json:"cpu_seconds"`
	Percent      float64 `json:"percent"`
	MicrosPerMsg float64 `json:"us_per_msg"`
}

// breakdown is a CPU profile of a drain split into stages.
type breakdown struct {
	Profile      string       `json:"profile"`
	Messages     int          `json:"messages"`
	CPUSeconds   float64      `json:"cpu_seconds"` // sampled CPU of the whole process life
	MicrosPerMsg float64      `json:"us_per_msg"`
	Stages       []stageShare `json:"stages"`
	// Top are the functions with the most self time, for a first look without pprof.
	Top []string `json:"top_self"`
}

// stageOf returns the stage of a stack (leaf first).
func stageOf(frames []string) string {
	for _, f := range frames {
		for _, st := range stages {
			for _, p := range st.prefixes {
				if strings.HasPrefix(f, p) {
					return st.Name
				}
			}
		}
	}
	return otherStage
}

// breakdownOf reads a pprof CPU profile of a drain of n messages and splits it into stages.
func breakdownOf(path string, n int) (*breakdown, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return breakdownOfProfile(p, path, n)
}

func breakdownOfProfile(p *profile.Profile, path string, n int) (*breakdown, error) {
	vi := -1 // the "cpu" nanoseconds value
	for i, st := range p.SampleType {
		if st.Type == "cpu" {
			vi = i
		}
	}
	if vi < 0 {
		return nil, fmt.Errorf("%s: not a CPU profile", path)
	}
	ns := map[string]int64{}
	cnt := map[string]int64{}
	self := map[string]int64{}
	var total int64
	var frames []string
	for _, s := range p.Sample {
		frames = frames[:0]
		for _, loc := range s.Location {
			// Inlined calls are listed innermost first within a location, like the stack.
			for _, ln := range loc.Line {
				if ln.Function != nil {
					frames = append(frames, ln.Function.Name)
				}
			}
		}
		v := s.Value[vi]
		st := stageOf(frames)
		ns[st] += v
		cnt[st] += s.Value[0]
		total += v
		if len(frames) > 0 {
			self[frames[0]] += v
		}
	}
	if total == 0 || n <= 0 {
		return nil, fmt.Errorf("%s: no samples", path)
	}
	b := &breakdown{Profile: path, Messages: n, CPUSeconds: float64(total) / 1e9, MicrosPerMsg: float64(total) / 1e3 / float64(n)}
	names := make([]string, 0, len(stages)+1)
	for _, st := range stages {
		names = append(names, st.Name)
	}
	for _, name := range append(names, otherStage) {
		b.Stages = append(b.Stages, stageShare{Stage: name, Samples: cnt[name], CPUSeconds: float64(ns[name]) / 1e9,
			Percent: 100 * float64(ns[name]) / float64(total), MicrosPerMsg: float64(ns[name]) / 1e3 / float64(n)})
	}
	fns := make([]string, 0, len(self))
	for fn := range self {
		fns = append(fns, fn)
	}
	slices.SortFunc(fns, func(a, b string) int { return int(self[b] - self[a]) })
	for _, fn := range fns[:min(15, len(fns))] {
		b.Top = append(b.Top, fmt.Sprintf("%5.1f%%  %s", 100*float64(self[fn])/float64(total), fn))
	}
	return b, nil
}
