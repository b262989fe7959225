package emf_test

import (
	"bytes"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsqk/nsqk/shared/emf"
	"github.com/nsqk/nsqk/shared/local/emfread"
)

func newTestRegistry(buf *bytes.Buffer) *emf.Registry {
	return emf.New(emf.Config{
		Namespace:  "NSQK/Consumer",
		Dimensions: []emf.Dimension{{"Function", "nsqk-monitor"}},
		Output:     buf,
		Now:        func() time.Time { return time.UnixMilli(1764100000123) },
	})
}

func decodeAll(t *testing.T, buf *bytes.Buffer) []emfread.Document {
	t.Helper()
	var docs []emfread.Document
	for _, line := range strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n") {
		if line == "" {
			continue
		}
		d, err := emfread.Decode([]byte(line))
		if err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		docs = append(docs, d)
	}
	buf.Reset()
	return docs
}

// validStats is the statistic-set rule of aws-embedded-metrics-java (Statistics.isValid):
// CloudWatch drops impossible Min/Max/Count/Sum combinations.
func validStats(v emfread.Value) bool {
	return !(v.Max < v.Min || v.Count <= 0 || (v.Count == 1 && math.Abs(v.Max-v.Min) > 1e-5) ||
		v.Min+v.Max*(v.Count-1) < v.Sum*(1-1e-12) || v.Max+v.Min*(v.Count-1) > v.Sum*(1+1e-12)+1e-9)
}

func TestFlushWritesOneDocumentWithEveryKindAndResets(t *testing.T) {
	var buf bytes.Buffer
	r := newTestRegistry(&buf)
	recs := r.Counter("Records", emf.Count)
	r.Counter("Failures", emf.Count)
	lag := r.Gauge("Lag", emf.Milliseconds)
	lat := r.Histogram("E2ELatency", emf.Milliseconds)
	recs.Add(5)
	recs.Inc()
	lag.Set(1234.5)
	for _, v := range []float64{10, 10, 10, 200, 3000} {
		lat.Observe(v)
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	raw := buf.String()
	docs := decodeAll(t, &buf)
	if len(docs) != 1 {
		t.Fatalf("got %d documents, want 1", len(docs))
	}
	d := docs[0]
	if d.Namespace != "NSQK/Consumer" || d.Dimensions["Function"] != "nsqk-monitor" || d.Timestamp.UnixMilli() != 1764100000123 {
		t.Fatalf("metadata: %+v", d)
	}
	if v := d.Metrics["Records"]; v.Number == nil || *v.Number != 6 || v.Unit != emf.Count {
		t.Fatalf("Records = %+v", v)
	}
	if v := d.Metrics["Failures"]; v.Number == nil || *v.Number != 0 {
		t.Fatalf("Failures = %+v (a zero counter is reported)", v)
	}
	if v := d.Metrics["Lag"]; v.Number == nil || *v.Number != 1234.5 || v.Unit != emf.Milliseconds {
		t.Fatalf("Lag = %+v", v)
	}
	h := d.Metrics["E2ELatency"]
	if !h.IsHistogram || h.Count != 5 || h.Sum != 3230 || h.Min != 10 || h.Max != 3000 || len(h.Values) != 3 {
		t.Fatalf("E2ELatency = %+v", h)
	}
	if h.Counts[0] != 3 || math.Abs(h.Values[0]-10)/10 > 0.05 {
		t.Fatalf("bin of the three 10s: value %v count %v", h.Values[0], h.Counts[0])
	}
	if !validStats(h) {
		t.Fatalf("impossible statistic set %+v", h)
	}
	if !strings.HasPrefix(raw, `{"_aws":{"Timestamp":1764100000123,"CloudWatchMetrics":[{"Namespace":"NSQK/Consumer","Dimensions":[["Function"]],"Metrics":[`) {
		t.Fatalf("unexpected layout: %s", raw)
	}

	// Second flush: counters back to 0, histogram gone, gauge kept.
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	d = decodeAll(t, &buf)[0]
	if *d.Metrics["Records"].Number != 0 {
		t.Fatal("counter not reset")
	}
	if _, ok := d.Metrics["E2ELatency"]; ok {
		t.Fatal("empty histogram reported")
	}
	if *d.Metrics["Lag"].Number != 1234.5 {
		t.Fatal("gauge lost")
	}
}

func TestRegisteringTwiceReturnsTheSameMetricAndKindMismatchPanics(t *testing.T) {
	r := emf.New(emf.Config{Namespace: "x"})
	if r.Counter("a", emf.Count) != r.Counter("a", emf.Count) {
		t.Fatal("second Counter call made a new counter")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Histogram over a counter name did not panic")
		}
	}()
	r.Histogram("a", emf.Count)
}

func TestHistogramWithMoreThan100BinsIsSplitAcrossDocuments(t *testing.T) {
	var buf bytes.Buffer
	r := newTestRegistry(&buf)
	h := r.Histogram("E2ELatency", emf.Milliseconds)
	c := r.Counter("Records", emf.Count)
	c.Add(7)
	var want, largest float64
	n := 0
	// 0.5 ms .. ~2 h, geometric: ~170 bins, plus zero and negative values.
	for v := 0.5; v < 7.2e6; v *= 1.07 {
		h.Observe(v)
		h.Observe(v)
		want += 2 * v
		n += 2
		largest = v
	}
	h.Observe(0)
	h.Observe(-3) // clock skew: e2e latency below zero
	want -= 3
	n += 2
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	docs := decodeAll(t, &buf)
	if len(docs) < 2 {
		t.Fatalf("got %d documents, want the histogram split", len(docs))
	}
	var count, sum float64
	var minV, maxV = math.Inf(1), math.Inf(-1)
	records := 0
	for _, d := range docs {
		if len(d.Metrics) > emf.MaxMetricsPerDocument {
			t.Fatalf("%d metrics in one document", len(d.Metrics))
		}
		if v, ok := d.Metrics["Records"]; ok {
			records++
			if *v.Number != 7 {
				t.Fatalf("Records = %v", *v.Number)
			}
		}
		v, ok := d.Metrics["E2ELatency"]
		if !ok {
			continue
		}
		if len(v.Values) > emf.MaxValuesPerMetric {
			t.Fatalf("%d values in one histogram part", len(v.Values))
		}
		if !validStats(v) {
			t.Fatalf("impossible statistic set in a part: min %v max %v count %v sum %v", v.Min, v.Max, v.Count, v.Sum)
		}
		var cs float64
		for _, x := range v.Counts {
			cs += x
		}
		if cs != v.Count {
			t.Fatalf("Counts sum %v != Count %v", cs, v.Count)
		}
		count += v.Count
		sum += v.Sum
		minV, maxV = min(minV, v.Min), max(maxV, v.Max)
	}
	if records != 1 {
		t.Fatalf("counter reported %d times, want once", records)
	}
	if count != float64(n) || math.Abs(sum-want) > 1e-6*want || minV != -3 || maxV != largest {
		t.Fatalf("parts add up to count %v sum %v min %v max %v; want %d, %v, -3, %v", count, sum, minV, maxV, n, want, largest)
	}
}

func TestMoreThan100MetricsAreSpreadOverDocuments(t *testing.T) {
	var buf bytes.Buffer
	r := newTestRegistry(&buf)
	for i := range 250 {
		r.Counter("m"+strconv.Itoa(i), emf.Count).Add(int64(i))
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	docs := decodeAll(t, &buf)
	if len(docs) != 3 {
		t.Fatalf("got %d documents, want 3", len(docs))
	}
	seen := map[string]float64{}
	for _, d := range docs {
		if len(d.Metrics) > emf.MaxMetricsPerDocument {
			t.Fatalf("%d metrics in a document", len(d.Metrics))
		}
		for k, v := range d.Metrics {
			seen[k] = *v.Number
		}
	}
	for i := range 250 {
		if seen["m"+strconv.Itoa(i)] != float64(i) {
			t.Fatalf("m%d = %v", i, seen["m"+strconv.Itoa(i)])
		}
	}
}

func TestConcurrentRecordingAndFlushingLosesNothing(t *testing.T) {
	var mu sync.Mutex
	var out bytes.Buffer
	sum := &emfread.Summary{}
	w := &emfread.LineWriter{Summary: sum, Next: lockedWriter{&mu, &out}}
	r := emf.New(emf.Config{Namespace: "NSQK/Bridge", Dimensions: []emf.Dimension{{"Stream", "s"}}, Output: w})
	c := r.Counter("Records", emf.Count)
	h := r.Histogram("Latency", emf.Milliseconds)
	const workers, per = 4, 2000
	var wg sync.WaitGroup
	stop := make(chan struct{})
	flushed := make(chan struct{})
	go func() {
		defer close(flushed)
		for {
			select {
			case <-stop:
				return
			default:
				if err := r.Flush(); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				c.Inc()
				h.Observe(float64(1 + (i+w)%500))
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-flushed
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	rec, _ := sum.Get("Records")
	lat, _ := sum.Get("Latency")
	if rec.Sum != workers*per || lat.Count != workers*per {
		t.Fatalf("counted %v records and %v latencies, want %d", rec.Sum, lat.Count, workers*per)
	}
	if p := lat.Percentile(50); p < 200 || p > 300 {
		t.Fatalf("p50 = %v, want about 250", p)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestNothingToReportWritesNothing(t *testing.T) {
	var buf bytes.Buffer
	r := newTestRegistry(&buf)
	r.Histogram("E2ELatency", emf.Milliseconds)
	r.Gauge("Lag", emf.Milliseconds)
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 {
		t.Fatalf("wrote %q", buf.String())
	}
}

func BenchmarkHistogramObserve(b *testing.B) {
	h := emf.New(emf.Config{Namespace: "x"}).Histogram("h", emf.Milliseconds)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.Observe(float64(i%5000) + 0.5)
	}
}

func TestHistogramIsExactUpTo100DistinctValuesThenBinned(t *testing.T) {
	var buf bytes.Buffer
	r := newTestRegistry(&buf)
	h := r.Histogram("BatchSize", emf.Count)
	for _, v := range []float64{3, 2, 3, 100} {
		h.Observe(v)
	}
	r.Flush()
	v := decodeAll(t, &buf)[0].Metrics["BatchSize"]
	if !slices.Equal(v.Values, []float64{2, 3, 100}) || !slices.Equal(v.Counts, []float64{1, 2, 1}) || v.Sum != 108 || v.Min != 2 || v.Max != 100 {
		t.Fatalf("exact histogram %+v", v)
	}
	for i := range 101 { // one distinct value too many: binned
		h.Observe(float64(1000 + i))
	}
	r.Flush()
	v = decodeAll(t, &buf)[0].Metrics["BatchSize"]
	if len(v.Values) >= 101 || v.Count != 101 || v.Min != 1000 || v.Max != 1100 || v.Sum != 101*1050 || !validStats(v) {
		t.Fatalf("binned histogram: %d values, %+v", len(v.Values), v)
	}
	for _, x := range v.Values {
		if x < 1000/1.1 || x > 1100*1.1 {
			t.Fatalf("bin value %v outside the observed range", x)
		}
	}
}

// A rollup publishes every metric under a leading part of the dimensions too, with the values of
// all of them at the root.
func TestRollupsAddDimensionSets(t *testing.T) {
	var buf bytes.Buffer
	r := emf.New(emf.Config{Namespace: "NSQK/Bridge", Output: &buf, Rollups: []int{1},
		Dimensions: []emf.Dimension{{"Stream", "s"}, {"Partition", "0/2"}}})
	r.Gauge("OwnedNodes", emf.Count).Set(3)
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	raw := buf.String()
	if !strings.Contains(raw, `"Dimensions":[["Stream","Partition"],["Stream"]]`) ||
		!strings.Contains(raw, `"Stream":"s","Partition":"0/2","OwnedNodes":3`) {
		t.Fatalf("document %s", raw)
	}
	if d := decodeAll(t, &buf); len(d) != 1 || d[0].Dimensions["Partition"] != "0/2" {
		t.Fatalf("decoded %+v", d)
	}
	for _, n := range []int{-1, 2} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("rollup %d accepted", n)
				}
			}()
			emf.New(emf.Config{Namespace: "n", Rollups: []int{n}, Dimensions: []emf.Dimension{{"A", "a"}, {"B", "b"}}})
		}()
	}
}
