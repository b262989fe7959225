// Package emf writes CloudWatch metrics in the Embedded Metric Format (EMF): JSON log lines that
// CloudWatch Logs turns into metrics, so a Lambda function (or a container whose stdout goes to
// CloudWatch Logs) publishes metrics without an SDK call.
//
// A Registry holds counters, gauges and histograms under one namespace and one dimension set.
// Recording is cheap and safe for concurrent use (counters and gauges are atomics; a histogram
// takes an uncontended mutex and never allocates). Flush writes what was recorded since the last
// flush as EMF documents, one Write per document, and resets counters and histograms.
//
// Limits of the format (Specification: Embedded metric format, CloudWatch User Guide; the same
// numbers are the MAX_METRICS_PER_EVENT and MAX_DATAPOINTS_PER_METRIC constants of AWS's own
// aws-embedded-metrics libraries):
//
//   - a MetricDirective holds at most 100 metric definitions;
//   - a values array holds at most 100 entries (a Values/Counts histogram at most 100 bins);
//   - a DimensionSet holds at most 30 keys (9 in older versions of the spec: keep it short).
//
// A flush therefore usually writes one document, and more only when it must: a histogram with
// more than 100 distinct bins is split across documents (each part with its own exact
// Count/Sum and Min/Max bounds, so CloudWatch's aggregate is the same), and more than 100 metrics
// are spread over several documents.
//
// A histogram reports exact values while a flush interval has at most 100 distinct ones (a
// Lambda batch of up to 100 records, a batch size per invocation). Beyond that it uses the bins
// of aws-embedded-metrics-java (Histogram.java): a value v > 0 falls in
// bin i = floor(ln v / ln 1.1) and is reported as exp((i+0.5)·ln 1.1), i.e. within ±5% — enough
// for CloudWatch to compute percentiles over the Values/Counts form. Values ≤ 0 are reported in a
// bin of their own with the value 0.
package emf

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Limits from the EMF specification.
const (
	MaxMetricsPerDocument = 100 // MetricDefinition objects in one MetricDirective
	MaxValuesPerMetric    = 100 // entries of a values array / bins of a Values/Counts histogram
	MaxDimensions         = 30  // keys in one DimensionSet
)

// Unit is a CloudWatch metric unit.
type Unit string

// Units used in this project (any CloudWatch unit name works).
const (
	Count        Unit = "Count"
	Milliseconds Unit = "Milliseconds"
	Seconds      Unit = "Seconds"
	Bytes        Unit = "Bytes"
	Percent      Unit = "Percent"
	CountPerSec  Unit = "Count/Second"
	None         Unit = "None"
)

// Dimension is one dimension key and its value.
type Dimension struct{ Name, Value string }

// Config configures a Registry.
type Config struct {
	// Namespace is the CloudWatch namespace, for example "NSQK/Consumer". Required.
	Namespace string
	// Dimensions is the one dimension set every metric is published with, for example
	// [{Function, nsqk-monitor}]. May be empty.
	Dimensions []Dimension
	// Rollups are further dimension sets every metric is also published with, each the first n
	// Dimensions for one n in Rollups (0 <= n < len(Dimensions)): CloudWatch then aggregates the
	// publishers that differ only in the dimensions left out.
	Rollups []int
	// Output receives the documents, one JSON line each, one Write call per line. Default
	// io.Discard.
	Output io.Writer
	// Now stamps documents (_aws.Timestamp); default time.Now.
	Now func() time.Time
}

// Registry holds metrics and flushes them as EMF documents. Its methods are safe for concurrent
// use.
type Registry struct {
	cfg     Config
	dimJSON []byte // `"Dimensions":[[...]]` plus the root members for the dimension values

	mu      sync.Mutex // guards metrics (registration) and serialises Flush
	metrics []metric
	byName  map[string]metric
	buf     bytes.Buffer
}

type metric interface {
	name() string
	unit() Unit
	// collect appends the parts (JSON values) to report and resets what must be reset.
	collect(parts [][]byte) [][]byte
}

// New returns a Registry. It panics on an invalid Config (programming error).
func New(cfg Config) *Registry {
	if cfg.Namespace == "" {
		panic("emf: empty Namespace")
	}
	if len(cfg.Dimensions) > MaxDimensions {
		panic("emf: more than 30 dimensions")
	}
	if cfg.Output == nil {
		cfg.Output = io.Discard
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Registry{cfg: cfg, byName: map[string]metric{}}
	var b bytes.Buffer
	b.WriteString(`"Dimensions":[`)
	set := func(n int) {
		b.WriteByte('[')
		for i, d := range cfg.Dimensions[:n] {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(&b, d.Name)
		}
		b.WriteByte(']')
	}
	set(len(cfg.Dimensions))
	for _, n := range cfg.Rollups {
		if n < 0 || n >= len(cfg.Dimensions) {
			panic("emf: rollup " + strconv.Itoa(n) + " out of range")
		}
		b.WriteByte(',')
		set(n)
	}
	b.WriteByte(']')
	r.dimJSON = b.Bytes()
	return r
}

// Namespace returns the configured namespace.
func (r *Registry) Namespace() string { return r.cfg.Namespace }

func (r *Registry) register(name string, u Unit, mk func() metric) metric {
	if name == "" || name == "_aws" {
		panic("emf: invalid metric name " + strconv.Quote(name))
	}
	for _, d := range r.cfg.Dimensions {
		if d.Name == name {
			panic("emf: metric name " + name + " collides with a dimension")
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if m, ok := r.byName[name]; ok {
		return m
	}
	m := mk()
	r.byName[name] = m
	r.metrics = append(r.metrics, m)
	return m
}

// Counter returns the counter with this name, creating it. Counters report the sum of Add calls
// since the previous flush (0 included, so that alarms see a datapoint).
func (r *Registry) Counter(name string, u Unit) *Counter {
	m := r.register(name, u, func() metric { return &Counter{n: name, u: u} })
	c, ok := m.(*Counter)
	if !ok {
		panic("emf: " + name + " is registered as another kind of metric")
	}
	return c
}

// Gauge returns the gauge with this name, creating it. A gauge reports its last Set value at
// every flush once it has been set.
func (r *Registry) Gauge(name string, u Unit) *Gauge {
	m := r.register(name, u, func() metric { return &Gauge{n: name, u: u} })
	g, ok := m.(*Gauge)
	if !ok {
		panic("emf: " + name + " is registered as another kind of metric")
	}
	return g
}

// Histogram returns the histogram with this name, creating it. A histogram reports the values
// observed since the previous flush in the Values/Counts form (with Min, Max, Count and Sum),
// and nothing when there were none.
func (r *Registry) Histogram(name string, u Unit) *Histogram {
	m := r.register(name, u, func() metric { return &Histogram{n: name, u: u} })
	h, ok := m.(*Histogram)
	if !ok {
		panic("emf: " + name + " is registered as another kind of metric")
	}
	return h
}

// Flush writes the metrics recorded since the previous flush as EMF documents to the output and
// resets counters and histograms. It writes nothing if there is nothing to report (no metric
// registered, or only unset gauges and empty histograms). It returns the first write error.
func (r *Registry) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	type entry struct {
		m     metric
		parts [][]byte
	}
	var entries []entry
	rounds := 0
	for _, m := range r.metrics {
		parts := m.collect(nil)
		if len(parts) == 0 {
			continue
		}
		entries = append(entries, entry{m, parts})
		rounds = max(rounds, len(parts))
	}
	ts := r.cfg.Now().UnixMilli()
	// Document k of round j carries part j of up to 100 metrics that have such a part.
	for j := range rounds {
		var batch []entry
		for _, e := range entries {
			if j < len(e.parts) {
				batch = append(batch, e)
			}
		}
		for len(batch) > 0 {
			n := min(len(batch), MaxMetricsPerDocument)
			b := &r.buf
			b.Reset()
			b.WriteString(`{"_aws":{"Timestamp":`)
			b.WriteString(strconv.FormatInt(ts, 10))
			b.WriteString(`,"CloudWatchMetrics":[{"Namespace":`)
			writeJSONString(b, r.cfg.Namespace)
			b.WriteByte(',')
			b.Write(r.dimJSON)
			b.WriteString(`,"Metrics":[`)
			for i, e := range batch[:n] {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(`{"Name":`)
				writeJSONString(b, e.m.name())
				b.WriteString(`,"Unit":`)
				writeJSONString(b, string(e.m.unit()))
				b.WriteByte('}')
			}
			b.WriteString(`]}]}`)
			for _, d := range r.cfg.Dimensions {
				b.WriteByte(',')
				writeJSONString(b, d.Name)
				b.WriteByte(':')
				writeJSONString(b, d.Value)
			}
			for _, e := range batch[:n] {
				b.WriteByte(',')
				writeJSONString(b, e.m.name())
				b.WriteByte(':')
				b.Write(e.parts[j])
			}
			b.WriteString("}\n")
			if _, err := r.cfg.Output.Write(b.Bytes()); err != nil {
				return fmt.Errorf("emf: write: %w", err)
			}
			batch = batch[n:]
		}
	}
	return nil
}

// Counter is a monotonically increasing count, reset at every flush.
type Counter struct {
	n string
	u Unit
	v atomic.Int64
}

// Add adds d (which may be 0).
func (c *Counter) Add(d int64) { c.v.Add(d) }

// Inc adds 1.
func (c *Counter) Inc() { c.v.Add(1) }

func (c *Counter) name() string { return c.n }
func (c *Counter) unit() Unit   { return c.u }
func (c *Counter) collect(parts [][]byte) [][]byte {
	return append(parts, strconv.AppendInt(nil, c.v.Swap(0), 10))
}

// Gauge is a value that is reported as last set.
type Gauge struct {
	n    string
	u    Unit
	bits atomic.Uint64
	set  atomic.Bool
}

// Set sets the value.
func (g *Gauge) Set(v float64) {
	g.bits.Store(math.Float64bits(v))
	g.set.Store(true)
}

func (g *Gauge) name() string { return g.n }
func (g *Gauge) unit() Unit   { return g.u }
func (g *Gauge) collect(parts [][]byte) [][]byte {
	if !g.set.Load() {
		return parts
	}
	return append(parts, appendFloat(nil, math.Float64frombits(g.bits.Load())))
}

// Histogram bins, after aws-embedded-metrics-java: bin i holds (1.1^i, 1.1^(i+1)].
const (
	binMin  = -300 // 1.1^-300 ≈ 4e-13
	binMax  = 500  // 1.1^500 ≈ 5e20
	numBins = binMax - binMin + 1
)

var lnBase = math.Log(1.1)

// binOf returns the bin index of v > 0, clamped to [binMin, binMax].
func binOf(v float64) int {
	i := int(math.Floor(math.Log(v) / lnBase))
	return min(max(i, binMin), binMax)
}

func binValue(i int) float64 { return math.Exp((float64(i) + 0.5) * lnBase) }
func binLow(i int) float64   { return math.Exp(float64(i) * lnBase) }
func binHigh(i int) float64  { return math.Exp(float64(i+1) * lnBase) }

// Histogram records a distribution of values; see the package documentation for its bins.
type Histogram struct {
	n string
	u Unit

	mu       sync.Mutex
	count    uint64
	sum      float64
	min, max float64
	zero     uint64  // values <= 0 (and NaN)
	zeroSum  float64 // their sum (negative or 0)
	bins     [numBins]uint32
	binSums  [numBins]float64
	lo, hi   int // lowest and highest bin used, valid when count > zero
	anyInBin bool
	// Until more than MaxValuesPerMetric distinct values are seen in a flush interval, values
	// are kept exactly (small batches report exact numbers); then they move to the bins.
	exact   []exactValue
	binning bool
}

type exactValue struct {
	v float64
	n uint64
}

// Observe records one value.
func (h *Histogram) Observe(v float64) {
	h.mu.Lock()
	h.observeLocked(v)
	h.mu.Unlock()
}

// ObserveDuration records d in the histogram's unit (Milliseconds or Seconds; anything else is
// taken as milliseconds).
func (h *Histogram) ObserveDuration(d time.Duration) {
	if h.u == Seconds {
		h.Observe(d.Seconds())
		return
	}
	h.Observe(float64(d) / float64(time.Millisecond))
}

func (h *Histogram) observeLocked(v float64) {
	if math.IsInf(v, 0) {
		return // not representable in JSON; CloudWatch would reject the whole document
	}
	if math.IsNaN(v) {
		v = 0
	}
	if h.count == 0 || v < h.min {
		h.min = v
	}
	if h.count == 0 || v > h.max {
		h.max = v
	}
	h.count++
	if !h.binning {
		for i := range h.exact {
			if h.exact[i].v == v {
				h.exact[i].n++
				h.sum += v
				return
			}
		}
		if len(h.exact) < MaxValuesPerMetric {
			h.exact = append(h.exact, exactValue{v, 1})
			h.sum += v
			return
		}
		// Too many distinct values: move them to the bins.
		h.binning = true
		for _, e := range h.exact {
			for range e.n {
				h.bin(e.v)
			}
		}
		h.exact = h.exact[:0]
	}
	h.sum += v
	h.bin(v)
}

// bin adds v to the bins (not to count or sum).
func (h *Histogram) bin(v float64) {
	if !(v > 0) {
		h.zero++
		h.zeroSum += v
		return
	}
	i := binOf(v)
	k := i - binMin
	h.bins[k]++
	h.binSums[k] += v
	if !h.anyInBin || i < h.lo {
		h.lo = i
	}
	if !h.anyInBin || i > h.hi {
		h.hi = i
	}
	h.anyInBin = true
}

func (h *Histogram) name() string { return h.n }
func (h *Histogram) unit() Unit   { return h.u }

type bin struct {
	value, sum, lo, hi float64
	count              uint64
}

func (h *Histogram) collect(parts [][]byte) [][]byte {
	h.mu.Lock()
	if h.count == 0 {
		h.mu.Unlock()
		return parts
	}
	var bins []bin
	if !h.binning {
		slices.SortFunc(h.exact, func(a, b exactValue) int { return cmp.Compare(a.v, b.v) })
		for _, e := range h.exact {
			bins = append(bins, bin{value: e.v, sum: e.v * float64(e.n), lo: e.v, hi: e.v, count: e.n})
		}
		h.exact = h.exact[:0]
	}
	if h.zero > 0 {
		bins = append(bins, bin{value: 0, sum: h.zeroSum, lo: h.min, hi: 0, count: h.zero})
	}
	if h.anyInBin {
		for i := h.lo; i <= h.hi; i++ {
			k := i - binMin
			if c := h.bins[k]; c > 0 {
				bins = append(bins, bin{value: binValue(i), sum: h.binSums[k], lo: binLow(i), hi: binHigh(i), count: uint64(c)})
				h.bins[k], h.binSums[k] = 0, 0
			}
		}
	}
	gmin, gmax := h.min, h.max
	h.count, h.sum, h.zero, h.zeroSum, h.anyInBin, h.binning = 0, 0, 0, 0, false, false
	h.mu.Unlock()

	for len(bins) > 0 {
		n := min(len(bins), MaxValuesPerMetric)
		part := bins[:n]
		bins = bins[n:]
		var cnt uint64
		var sum float64
		for _, b := range part {
			cnt += b.count
			sum += b.sum
		}
		// Bounds of this part: the exact extremes where they fall in it, else the bin edges
		// (every value of a bin lies within them), so Min ≤ values ≤ Max holds per part.
		lo := max(part[0].lo, gmin)
		hi := min(part[n-1].hi, gmax)
		if len(parts) == 0 && lo > gmin { // first part holds the smallest bin
			lo = gmin
		}
		if len(bins) == 0 {
			hi = gmax
		}
		lo, hi = min(lo, hi), max(lo, hi)
		sum = min(max(sum, lo*float64(cnt)), hi*float64(cnt)) // guard float rounding
		b := make([]byte, 0, 32+n*24)
		b = append(b, `{"Values":[`...)
		for i, x := range part {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendFloat(b, x.value)
		}
		b = append(b, `],"Counts":[`...)
		for i, x := range part {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, x.count, 10)
		}
		b = append(b, `],"Max":`...)
		b = appendFloat(b, hi)
		b = append(b, `,"Min":`...)
		b = appendFloat(b, lo)
		b = append(b, `,"Count":`...)
		b = strconv.AppendUint(b, cnt, 10)
		b = append(b, `,"Sum":`...)
		b = appendFloat(b, sum)
		b = append(b, '}')
		parts = append(parts, b)
	}
	return parts
}

func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, '0')
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

func writeJSONString(b *bytes.Buffer, s string) {
	q, _ := json.Marshal(s) // cannot fail for a string
	b.Write(q)
}
