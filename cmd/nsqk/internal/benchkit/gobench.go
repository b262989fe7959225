// Package benchkit holds the measuring helpers of `nsqk bench`: reading `go test -bench` output,
// process CPU and memory from rusage and /proc, the machine description, exact percentiles.
package benchkit

import (
	"bufio"
	"io"
	"strconv"
	"strings"
)

// GoBench is one result line of `go test -bench` (the standard benchmark format).
type GoBench struct {
	Package    string  `json:"package"`
	Name       string  `json:"name"`  // without the -GOMAXPROCS suffix
	Procs      int     `json:"procs"` // the suffix; 1 when absent
	Iterations int64   `json:"iterations"`
	NsPerOp    float64 `json:"ns_per_op"`
	// MBPerSec, BytesPerOp and AllocsPerOp are -1 when the line does not report them.
	MBPerSec    float64 `json:"mb_per_s"`
	BytesPerOp  float64 `json:"bytes_per_op"`
	AllocsPerOp float64 `json:"allocs_per_op"`
	// Metrics are every other value/unit pair (b.ReportMetric), e.g. "records/s".
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// GoBenchRun is a parsed `go test -bench` output.
type GoBenchRun struct {
	CPU        string    `json:"cpu,omitempty"`
	GOOS       string    `json:"goos,omitempty"`
	GOARCH     string    `json:"goarch,omitempty"`
	Benchmarks []GoBench `json:"benchmarks"`
	// Packages lists every package the output mentions ("ok"/"pkg:" lines), with or without
	// benchmarks; Failures holds FAIL lines.
	Packages []string `json:"packages"`
	Failures []string `json:"failures,omitempty"`
}

// ParseGoBench reads `go test -bench` output (several packages may be concatenated).
func ParseGoBench(r io.Reader) (GoBenchRun, error) {
	var run GoBenchRun
	pkg := ""
	seen := map[string]bool{}
	addPkg := func(p string) {
		if p != "" && !seen[p] {
			seen[p] = true
			run.Packages = append(run.Packages, p)
		}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "pkg: "):
			pkg = strings.TrimPrefix(line, "pkg: ")
			addPkg(pkg)
		case strings.HasPrefix(line, "cpu: "):
			run.CPU = strings.TrimPrefix(line, "cpu: ")
		case strings.HasPrefix(line, "goos: "):
			run.GOOS = strings.TrimPrefix(line, "goos: ")
		case strings.HasPrefix(line, "goarch: "):
			run.GOARCH = strings.TrimPrefix(line, "goarch: ")
		case strings.HasPrefix(line, "ok "), strings.HasPrefix(line, "ok\t"):
			if f := strings.Fields(line); len(f) >= 2 {
				addPkg(f[1])
			}
			pkg = ""
		case strings.HasPrefix(line, "FAIL"), strings.HasPrefix(line, "--- FAIL"), strings.HasPrefix(line, "panic:"):
			run.Failures = append(run.Failures, line)
		case strings.HasPrefix(line, "Benchmark"):
			if b, ok := parseBenchLine(line); ok {
				b.Package = pkg
				run.Benchmarks = append(run.Benchmarks, b)
			}
		}
	}
	return run, sc.Err()
}

// parseBenchLine parses "BenchmarkX-8  1000  123 ns/op  45.6 MB/s  0 B/op  0 allocs/op  7 unit".
func parseBenchLine(line string) (GoBench, bool) {
	f := strings.Fields(line)
	if len(f) < 4 || len(f)%2 != 0 {
		return GoBench{}, false
	}
	b := GoBench{Name: f[0], Procs: 1, MBPerSec: -1, BytesPerOp: -1, AllocsPerOp: -1}
	if i := strings.LastIndexByte(f[0], '-'); i > 0 {
		if p, err := strconv.Atoi(f[0][i+1:]); err == nil {
			b.Name, b.Procs = f[0][:i], p
		}
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return GoBench{}, false
	}
	b.Iterations = n
	gotNs := false
	for i := 2; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return GoBench{}, false
		}
		switch unit := f[i+1]; unit {
		case "ns/op":
			b.NsPerOp, gotNs = v, true
		case "MB/s":
			b.MBPerSec = v
		case "B/op":
			b.BytesPerOp = v
		case "allocs/op":
			b.AllocsPerOp = v
		default:
			if b.Metrics == nil {
				b.Metrics = map[string]float64{}
			}
			b.Metrics[unit] = v
		}
	}
	return b, gotNs
}
