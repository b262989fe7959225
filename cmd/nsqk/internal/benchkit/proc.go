package benchkit

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Usage is CPU time and peak memory of a process.
type Usage struct {
	User   time.Duration `json:"user_ns"`
	System time.Duration `json:"system_ns"`
	// MaxRSS is the peak resident set size in bytes (getrusage ru_maxrss, KiB on Linux). For a
	// child started by a Go program it includes the parent's RSS: see ReadProc's HWM instead.
	MaxRSS int64 `json:"max_rss_bytes"`
	// Voluntary and involuntary context switches.
	VolCtxSw   int64 `json:"voluntary_context_switches"`
	InvolCtxSw int64 `json:"involuntary_context_switches"`
}

// CPU is user + system time.
func (u Usage) CPU() time.Duration { return u.User + u.System }

// ChildUsage returns the rusage of an exited child.
func ChildUsage(ps *os.ProcessState) (Usage, bool) {
	if ps == nil {
		return Usage{}, false
	}
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok || ru == nil {
		return Usage{User: ps.UserTime(), System: ps.SystemTime()}, false
	}
	return fromRusage(ru), true
}

// SelfUsage returns the calling process's rusage (all threads, no children).
func SelfUsage() Usage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return Usage{}
	}
	return fromRusage(&ru)
}

func fromRusage(ru *syscall.Rusage) Usage {
	return Usage{User: time.Duration(ru.Utime.Nano()), System: time.Duration(ru.Stime.Nano()), MaxRSS: int64(ru.Maxrss) << 10,
		VolCtxSw: int64(ru.Nvcsw), InvolCtxSw: int64(ru.Nivcsw)}
}

// ProcSample is one reading of a running process from /proc.
type ProcSample struct {
	CPU time.Duration // utime + stime so far (clock-tick resolution)
	RSS int64         // VmRSS, bytes
	HWM int64         // VmHWM (peak RSS so far), bytes
}

// clkTck is USER_HZ: 100 on every Linux the Go runtime supports.
const clkTck = 100

// ReadProc samples /proc/<pid>/stat and /proc/<pid>/status.
func ReadProc(pid int) (ProcSample, error) {
	var s ProcSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name (field 2) is in parentheses and may hold spaces: split after it.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("benchkit: odd /proc/%d/stat", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return s, fmt.Errorf("benchkit: short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	s.CPU = time.Duration(ut+st) * time.Second / clkTck
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch k {
		case "VmRSS":
			s.RSS = kib(v)
		case "VmHWM":
			s.HWM = kib(v)
		}
	}
	return s, nil
}

func kib(v string) int64 {
	f := strings.Fields(v)
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.ParseInt(f[0], 10, 64)
	return n << 10
}

// Machine describes where a benchmark ran.
type Machine struct {
	CPUModel  string    `json:"cpu_model"`
	Cores     int       `json:"cores"` // logical CPUs available to this process
	GoVersion string    `json:"go_version"`
	GOOS      string    `json:"goos"`
	GOARCH    string    `json:"goarch"`
	Kernel    string    `json:"kernel"`
	Hostname  string    `json:"hostname"`
	MemTotal  int64     `json:"mem_total_bytes"`
	LoadAvg   []float64 `json:"loadavg"` // 1, 5, 15 minutes, when described
}

// DescribeMachine reads /proc/cpuinfo, /proc/meminfo, /proc/loadavg and uname.
func DescribeMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && k == "MemTotal" {
				m.MemTotal = kib(v)
			}
		}
	}
	m.LoadAvg = LoadAvg()
	if out, err := exec.Command("uname", "-srm").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	} else if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.Hostname, _ = os.Hostname()
	return m
}

// LoadAvg returns the 1, 5 and 15 minute load averages (nil if unknown).
func LoadAvg() []float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return nil
	}
	out := make([]float64, 3)
	for i := range out {
		out[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return out
}

// Percentiles returns the exact q-quantiles of values (nearest rank: the smallest value with at
// least q of the values at or below it); values is sorted in place. nil for no values.
func Percentiles(values []float64, qs ...float64) []float64 {
	if len(values) == 0 {
		return nil
	}
	sort.Float64s(values)
	out := make([]float64, len(qs))
	for i, q := range qs {
		rank := int(q*float64(len(values))+0.999999999) - 1 // ceil(q*n) - 1
		out[i] = values[min(max(rank, 0), len(values)-1)]
	}
	return out
}

// SystemCPU reads the machine's busy CPU time so far, all CPUs, from /proc/stat: user, nice,
// system and steal (time the hypervisor gave to others: it disturbs a measurement as much as a
// neighbour process). irq and softirq are left out: the kernel books much of a process's own
// network work there (loopback TCP), not on the process.
func SystemCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, fmt.Errorf("benchkit: odd /proc/stat")
	}
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		switch i {
		case 0, 1, 2, 7: // user, nice, system, steal (not idle, iowait, irq, softirq, guest*)
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / clkTck, nil
}
