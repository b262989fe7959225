// Package emfread reads Embedded Metric Format lines back into metrics, as CloudWatch Logs does
// when it extracts them: Decode checks one document against the format's rules, a Summary adds
// documents up over a run, and a LineWriter does both for a stream of log lines.
//
// Local environment: `nsqk dev` and tests use it to watch and assert the metrics the product
// writes with package emf; product code never does.
package emfread

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/nsqk/nsqk/shared/emf"
)

// Document is one decoded EMF document (see Decode).
type Document struct {
	Timestamp  time.Time
	Namespace  string
	Dimensions map[string]string // dimension key -> value from the root node
	Metrics    map[string]Value
}

// Value is one metric of a decoded document: a single number, or a Values/Counts histogram.
type Value struct {
	Unit   emf.Unit
	Number *float64 // a plain numeric target
	// Values/Counts form (nil Number):
	Values, Counts           []float64
	Min, Max, Count, Sum     float64
	IsHistogram, IsValueList bool
}

// Total returns the number for a plain value, the Sum for a histogram.
func (v Value) Total() float64 {
	if v.Number != nil {
		return *v.Number
	}
	return v.Sum
}

// Decode parses one EMF line written by an emf.Registry (or any EMF document with one
// MetricDirective). It checks the structural rules this package relies on: the _aws metadata,
// at most 100 metrics, at most 100 values per metric, dimension targets present as strings and
// metric targets present as numbers or Values/Counts objects.
func Decode(line []byte) (Document, error) {
	var root map[string]json.RawMessage
	if err := json.Unmarshal(line, &root); err != nil {
		return Document{}, fmt.Errorf("emf: not a JSON object: %w", err)
	}
	var meta struct {
		Timestamp         *int64 `json:"Timestamp"`
		CloudWatchMetrics []struct {
			Namespace  string     `json:"Namespace"`
			Dimensions [][]string `json:"Dimensions"`
			Metrics    []struct {
				Name string `json:"Name"`
				Unit string `json:"Unit"`
			} `json:"Metrics"`
		} `json:"CloudWatchMetrics"`
	}
	raw, ok := root["_aws"]
	if !ok {
		return Document{}, fmt.Errorf("emf: no _aws member")
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		return Document{}, fmt.Errorf("emf: _aws: %w", err)
	}
	if meta.Timestamp == nil || len(meta.CloudWatchMetrics) != 1 {
		return Document{}, fmt.Errorf("emf: want a Timestamp and exactly one MetricDirective")
	}
	md := meta.CloudWatchMetrics[0]
	if md.Namespace == "" || len(md.Metrics) == 0 || len(md.Metrics) > emf.MaxMetricsPerDocument {
		return Document{}, fmt.Errorf("emf: namespace %q with %d metrics", md.Namespace, len(md.Metrics))
	}
	doc := Document{
		Timestamp:  time.UnixMilli(*meta.Timestamp),
		Namespace:  md.Namespace,
		Dimensions: map[string]string{},
		Metrics:    map[string]Value{},
	}
	for _, set := range md.Dimensions {
		if len(set) > emf.MaxDimensions {
			return Document{}, fmt.Errorf("emf: dimension set of %d keys", len(set))
		}
		for _, k := range set {
			var s string
			if err := json.Unmarshal(root[k], &s); err != nil {
				return Document{}, fmt.Errorf("emf: dimension %q: not a string member", k)
			}
			doc.Dimensions[k] = s
		}
	}
	for _, m := range md.Metrics {
		t, ok := root[m.Name]
		if !ok {
			return Document{}, fmt.Errorf("emf: metric %q has no target member", m.Name)
		}
		v := Value{Unit: emf.Unit(m.Unit)}
		var num float64
		var list []float64
		var hist struct {
			Values, Counts       []float64
			Min, Max, Count, Sum *float64
		}
		switch {
		case json.Unmarshal(t, &num) == nil:
			v.Number = &num
		case json.Unmarshal(t, &list) == nil:
			if len(list) > emf.MaxValuesPerMetric {
				return Document{}, fmt.Errorf("emf: metric %q has %d values", m.Name, len(list))
			}
			v.Values, v.IsValueList = list, true
			for _, x := range list {
				v.Sum += x
			}
			v.Count = float64(len(list))
		case json.Unmarshal(t, &hist) == nil && hist.Count != nil && hist.Sum != nil && hist.Min != nil && hist.Max != nil:
			if len(hist.Values) != len(hist.Counts) || len(hist.Values) == 0 || len(hist.Values) > emf.MaxValuesPerMetric {
				return Document{}, fmt.Errorf("emf: metric %q: %d values, %d counts", m.Name, len(hist.Values), len(hist.Counts))
			}
			v.Values, v.Counts, v.IsHistogram = hist.Values, hist.Counts, true
			v.Min, v.Max, v.Count, v.Sum = *hist.Min, *hist.Max, *hist.Count, *hist.Sum
		default:
			return Document{}, fmt.Errorf("emf: metric %q: target is neither a number, an array nor a Values/Counts object", m.Name)
		}
		doc.Metrics[m.Name] = v
	}
	return doc, nil
}

// Summary accumulates decoded documents: counters and histogram counts summed, for tools
// (`nsqk dev`) and tests that want totals over a run.
type Summary struct {
	mu     sync.Mutex
	totals map[string]*SummaryValue
}

// SummaryValue is the accumulation of one metric over decoded documents.
type SummaryValue struct {
	Unit     emf.Unit
	Sum      float64 // sum of plain values, or of histogram sums
	Count    float64 // number of plain values, or histogram counts
	Min, Max float64
	// Bins merges histogram Values -> Counts, for percentiles.
	Bins map[float64]float64
}

// Percentile returns the p-th percentile (0 < p ≤ 100) of merged histogram bins, or NaN.
func (s *SummaryValue) Percentile(p float64) float64 {
	if len(s.Bins) == 0 {
		return math.NaN()
	}
	keys := make([]float64, 0, len(s.Bins))
	var total float64
	for k, c := range s.Bins {
		keys = append(keys, k)
		total += c
	}
	sort.Float64s(keys)
	rank := p / 100 * total
	var acc float64
	for _, k := range keys {
		acc += s.Bins[k]
		if acc >= rank {
			return k
		}
	}
	return keys[len(keys)-1]
}

// Add folds a document into the summary.
func (s *Summary) Add(d Document) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.totals == nil {
		s.totals = map[string]*SummaryValue{}
	}
	for name, v := range d.Metrics {
		t := s.totals[name]
		if t == nil {
			t = &SummaryValue{Unit: v.Unit, Min: math.Inf(1), Max: math.Inf(-1)}
			s.totals[name] = t
		}
		switch {
		case v.Number != nil:
			t.Sum += *v.Number
			t.Count++
			t.Min, t.Max = min(t.Min, *v.Number), max(t.Max, *v.Number)
		case v.IsHistogram:
			t.Sum += v.Sum
			t.Count += v.Count
			t.Min, t.Max = min(t.Min, v.Min), max(t.Max, v.Max)
			if t.Bins == nil {
				t.Bins = map[float64]float64{}
			}
			for i, x := range v.Values {
				t.Bins[x] += v.Counts[i]
			}
		default:
			for _, x := range v.Values {
				t.Sum += x
				t.Count++
				t.Min, t.Max = min(t.Min, x), max(t.Max, x)
			}
		}
	}
}

// Get returns a copy of the accumulated value of a metric.
func (s *Summary) Get(name string) (SummaryValue, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.totals[name]
	if !ok {
		return SummaryValue{}, false
	}
	c := *t
	if t.Bins != nil {
		c.Bins = make(map[float64]float64, len(t.Bins))
		for k, v := range t.Bins {
			c.Bins[k] = v
		}
	}
	return c, true
}

// Names returns the metric names seen, sorted.
func (s *Summary) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.totals))
	for k := range s.totals {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// LineWriter is an io.Writer that decodes every complete EMF line written to it into a Summary
// and forwards the bytes to Next (if any). Non-EMF lines are forwarded only. Use it as an
// emf.Registry's Output to watch metrics locally.
type LineWriter struct {
	Summary *Summary
	Next    io.Writer
	mu      sync.Mutex
	partial []byte
}

func (w *LineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := w.partial[:i]
		if d, err := Decode(line); err == nil && w.Summary != nil {
			w.Summary.Add(d)
		}
		w.partial = w.partial[i+1:]
	}
	if len(w.partial) == 0 {
		w.partial = nil
	}
	w.mu.Unlock()
	if w.Next != nil {
		return w.Next.Write(p)
	}
	return len(p), nil
}
