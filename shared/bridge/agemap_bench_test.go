package bridge

import (
	"runtime"
	"testing"
	"time"
)

// BenchmarkAgeMapMemory reports the heap bytes per remembered key of the two memories the bridge
// keeps (the late-redelivery fence and the written-message memory), the figure behind
// bytesPerSlot, the longest single put (and how many took over 1 ms) while 2M keys are
// inserted, and how long expiring all of them takes.
func BenchmarkAgeMapMemory(b *testing.B) {
	const n = 2_000_000
	measure := func(b *testing.B, put func(a any, i int, now time.Time), mk func() any) {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		a := mk()
		now := time.Now()
		var worst time.Duration
		over := 0
		for i := range n {
			t0 := time.Now()
			put(a, i, now.Add(time.Duration(i)*time.Microsecond))
			d := time.Since(t0)
			worst = max(worst, d)
			if d > time.Millisecond {
				over++
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/key")
		b.ReportMetric(float64(worst.Microseconds()), "worst-put-µs")
		b.ReportMetric(float64(over), "puts-over-1ms")
		runtime.KeepAlive(a)
	}
	for range b.N {
		b.Run("fence", func(b *testing.B) {
			var m *ageMap[uint64, int64]
			measure(b, func(_ any, i int, now time.Time) {
				k := uint64(i) * 0x9E3779B97F4A7C15
				_, g := m.get(k)
				m.put(k, int64(i), g, now)
			}, func() any { m = newAgeMap[uint64, int64](time.Hour, 0, nil); return m })
			t0 := time.Now()
			m.expire(time.Now().Add(3 * time.Hour))
			b.ReportMetric(float64(time.Since(t0).Microseconds()), "expire-µs")
		})
		b.Run("written", func(b *testing.B) {
			var m *ageMap[uint64, uint32]
			measure(b, func(_ any, i int, now time.Time) {
				k := uint64(i) * 0x9E3779B97F4A7C15
				_, g := m.get(k)
				m.put(k, uint32(i%3), g, now)
			}, func() any { m = newAgeMap[uint64, uint32](time.Hour, 0, nil); return m })
		})
	}
}
