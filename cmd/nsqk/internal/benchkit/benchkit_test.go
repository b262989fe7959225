package benchkit

import (
	"math"
	"os"
	"os/exec"
	"strings"
	"testing"
)

const sample = `goos: linux
goarch: amd64
pkg: github.com/nsqk/nsqk/shared/kpl
cpu: AMD EPYC 7B13
BenchmarkAggregatorAdd-2   	 5296174	       226.3 ns/op	1104.83 MB/s	       0 B/op	       0 allocs/op
BenchmarkAggregate-2       	 1000000	      1061 ns/op	 235.56 MB/s	       262.0 out-B/record	       0 B/op	       0 allocs/op
BenchmarkMD5-2             	    1520	    783154 ns/op	1338.90 MB/s
BenchmarkDeaggregate/nsqk-parse-only-2         	   29217	     41270 ns/op	3280.65 MB/s	  12128019 records/s	    3684 B/op	       1 allocs/op
BenchmarkNoProcs 	 100	 5 ns/op
BenchmarkBroken-2   	 abc	 5 ns/op
PASS
ok  	github.com/nsqk/nsqk/shared/kpl	12.153s
PASS
ok  	github.com/nsqk/nsqk/shared/consumer	0.008s
--- FAIL: BenchmarkX
FAIL	github.com/nsqk/nsqk/shared/other	0.1s
`

func TestParseGoBench(t *testing.T) {
	run, err := ParseGoBench(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if run.CPU != "AMD EPYC 7B13" || run.GOOS != "linux" || run.GOARCH != "amd64" {
		t.Fatalf("header %+v", run)
	}
	if len(run.Benchmarks) != 5 {
		t.Fatalf("%d benchmarks: %+v", len(run.Benchmarks), run.Benchmarks)
	}
	b := run.Benchmarks[1]
	if b.Name != "BenchmarkAggregate" || b.Procs != 2 || b.Iterations != 1000000 || b.NsPerOp != 1061 || b.MBPerSec != 235.56 ||
		b.BytesPerOp != 0 || b.AllocsPerOp != 0 || b.Metrics["out-B/record"] != 262 || b.Package != "github.com/nsqk/nsqk/shared/kpl" {
		t.Fatalf("%+v", b)
	}
	if m := run.Benchmarks[2]; m.BytesPerOp != -1 || m.AllocsPerOp != -1 || m.MBPerSec != 1338.90 {
		t.Fatalf("without -benchmem: %+v", m)
	}
	if d := run.Benchmarks[3]; d.Name != "BenchmarkDeaggregate/nsqk-parse-only" || d.Metrics["records/s"] != 12128019 {
		t.Fatalf("sub-benchmark: %+v", d)
	}
	if p := run.Benchmarks[4]; p.Name != "BenchmarkNoProcs" || p.Procs != 1 {
		t.Fatalf("no -N suffix: %+v", p)
	}
	if strings.Join(run.Packages, ",") != "github.com/nsqk/nsqk/shared/kpl,github.com/nsqk/nsqk/shared/consumer" {
		t.Fatalf("packages %v", run.Packages)
	}
	if len(run.Failures) != 2 {
		t.Fatalf("failures %v", run.Failures)
	}
}

func TestPercentiles(t *testing.T) {
	v := make([]float64, 1000)
	for i := range v {
		v[i] = float64(1000 - i) // 1..1000, reversed
	}
	q := Percentiles(v, 0.5, 0.99, 0.999, 1, 0)
	if q[0] != 500 || q[1] != 990 || q[2] != 999 || q[3] != 1000 || q[4] != 1 {
		t.Fatalf("%v", q)
	}
	if Percentiles(nil, 0.5) != nil {
		t.Fatal("empty input")
	}
	if q := Percentiles([]float64{7}, 0.999); q[0] != 7 {
		t.Fatal(q)
	}
}

func TestReadProcAndUsage(t *testing.T) {
	p, err := ReadProc(os.Getpid())
	if err != nil {
		t.Skip("no /proc:", err)
	}
	if p.RSS <= 0 || p.HWM < p.RSS || p.CPU < 0 {
		t.Fatalf("%+v", p)
	}
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
	if err := cmd.Run(); err != nil {
		t.Skip(err)
	}
	u, ok := ChildUsage(cmd.ProcessState)
	if !ok || u.CPU() <= 0 || u.MaxRSS <= 0 {
		t.Fatalf("%+v %v", u, ok)
	}
	if s := SelfUsage(); s.CPU() <= 0 {
		t.Fatalf("self %+v", s)
	}
}

func TestDescribeMachine(t *testing.T) {
	m := DescribeMachine()
	if m.Cores < 1 || m.GoVersion == "" || m.GOOS == "" {
		t.Fatalf("%+v", m)
	}
	if l := LoadAvg(); l != nil && (len(l) != 3 || math.IsNaN(l[0])) {
		t.Fatalf("%v", l)
	}
}

func TestSystemCPU(t *testing.T) {
	a, err := SystemCPU()
	if err != nil {
		t.Skip(err)
	}
	x := 0
	for i := 0; i < 50_000_000; i++ { // ~tens of ms of CPU
		x += i
	}
	b, _ := SystemCPU()
	if a <= 0 || b < a {
		t.Fatalf("%s then %s (%d)", a, b, x)
	}
}
