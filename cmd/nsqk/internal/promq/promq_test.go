package promq

import (
	"context"
	"math"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func TestValuesAndQuantilesFromRegistryAndScrape(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c_total", Help: "h"}, []string{"reason"})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "lat", Help: "h", Buckets: []float64{1, 2, 4}})
	reg.MustRegister(c, h)
	c.WithLabelValues("a").Add(3)
	c.WithLabelValues("b").Add(4)
	for _, v := range []float64{0.5, 1.5, 1.5, 3, 10} {
		h.Observe(v)
	}
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	g, err := Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Scrape(context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]Families{"gather": g, "scrape": s} {
		if v := f.Value("c_total"); v != 7 {
			t.Fatalf("%s: total %v", name, v)
		}
		if v := f.Value("c_total", "reason", "b"); v != 4 {
			t.Fatalf("%s: reason=b %v", name, v)
		}
		if m := f.ByLabel("c_total", "reason"); m["a"] != 3 || m["b"] != 4 {
			t.Fatalf("%s: by label %v", name, m)
		}
		hist := f.Histogram("lat")
		if hist.Count != 5 || hist.Sum != 16.5 {
			t.Fatalf("%s: count %v sum %v", name, hist.Count, hist.Sum)
		}
		// rank 2.5 of 5: bucket (1,2] holds cumulative 1..3 -> 1 + (2.5-1)/(3-1) = 1.75
		if q := hist.Quantile(0.5); math.Abs(q-1.75) > 1e-9 {
			t.Fatalf("%s: median %v", name, q)
		}
		if q := hist.Quantile(0.99); q != 4 { // in +Inf: the highest finite bound
			t.Fatalf("%s: p99 %v", name, q)
		}
		if d := hist.Sub(hist); d.Count != 0 || !math.IsNaN(d.Quantile(0.5)) {
			t.Fatalf("%s: self-difference %+v", name, d)
		}
	}
}
