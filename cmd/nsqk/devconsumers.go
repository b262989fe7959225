package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/nsqk/nsqk/shared/consumer"
	"github.com/nsqk/nsqk/shared/emf"
	"github.com/nsqk/nsqk/shared/lastlocation"
	"github.com/nsqk/nsqk/shared/local/esm"
	"github.com/nsqk/nsqk/shared/monitor"
)

// devConsumers runs both Lambda functions, each behind its own emulated event source mapping,
// as `make dev` shows them: their EMF lines go to files and into per-function summaries.
type devConsumers struct {
	mon     *monitor.Monitor
	ll      *lastlocation.Function
	store   *lastlocation.MemoryStore
	mm, ml  *esm.Mapping
	sm, sl  *emf.Summary
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	errs    chan error
	closers []io.Closer
}

func startConsumers(ctx context.Context, kc *kinesis.Client, stream, dir string) (*devConsumers, error) {
	d := &devConsumers{sm: &emf.Summary{}, sl: &emf.Summary{}, store: lastlocation.NewMemoryStore(), errs: make(chan error, 2)}
	logf, err := os.Create(filepath.Join(dir, "consumers.log"))
	if err != nil {
		return nil, err
	}
	mf, err := os.Create(filepath.Join(dir, "monitor-metrics.jsonl"))
	if err != nil {
		return nil, err
	}
	lf, err := os.Create(filepath.Join(dir, "lastlocation-metrics.jsonl"))
	if err != nil {
		return nil, err
	}
	d.closers = []io.Closer{logf, mf, lf}
	log := slog.New(slog.NewJSONHandler(logf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d.mon = monitor.New(monitor.Config{FunctionSetup: consumer.FunctionSetup{Name: "nsqk-monitor",
		Metrics: &emf.LineWriter{Summary: d.sm, Next: mf}, Logger: log}})
	d.ll = lastlocation.New(lastlocation.Config{FunctionSetup: consumer.FunctionSetup{Name: "nsqk-lastlocation",
		Metrics: &emf.LineWriter{Summary: d.sl, Next: lf}, Logger: log}, Store: d.store})
	base := esm.Config{Stream: stream, BatchSize: 100, MaxBatchingWindow: 200 * time.Millisecond,
		ReportBatchItemFailures: true, BisectBatchOnFunctionError: true, MaximumRetryAttempts: 3,
		MaximumRecordAge: time.Hour, FunctionTimeout: 30 * time.Second, Logger: log}
	cm, cl := base, base
	cm.FunctionName, cm.OnFailure = "nsqk-monitor", filepath.Join(dir, "monitor-on-failure.jsonl")
	cl.FunctionName, cl.OnFailure = "nsqk-lastlocation", filepath.Join(dir, "lastlocation-on-failure.jsonl")
	d.mm, d.ml = esm.New(kc, d.mon.Handle, cm), esm.New(kc, d.ll.Handle, cl)
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.cancel = cancel
	for _, m := range []*esm.Mapping{d.mm, d.ml} {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if err := m.Run(cctx); err != nil {
				d.errs <- err
			}
		}()
	}
	return d, nil
}

func (d *devConsumers) status() string {
	ms, ls := d.mon.Stats(), d.ll.Stats()
	e2e, _ := d.sm.Get("E2ELatency")
	return fmt.Sprintf("monitor: %d records, %d order violations, %d duplicates, e2e p50 %s p99 %s | lastlocation: %d applied, %d stale, %d users",
		ms.Records, ms.OrderViolations, ms.Duplicates, msf(e2e.Percentile(50)), msf(e2e.Percentile(99)), ls.Applied, ls.Stale, d.store.Len())
}

// wait returns once both mappings have handled n Kinesis records.
func (d *devConsumers) wait(ctx context.Context, n int64, tick <-chan time.Time, status func()) error {
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for d.mm.Stats().RecordsDone < n || d.ml.Stats().RecordsDone < n {
		select {
		case err := <-d.errs:
			return fmt.Errorf("event source mapping: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick:
			status()
		case <-poll.C:
		}
	}
	return nil
}

func (d *devConsumers) summary(out io.Writer) {
	ms, ls := d.mon.Stats(), d.ll.Stats()
	mm, ml := d.mm.Stats(), d.ml.Stats()
	e2e, _ := d.sm.Get("E2ELatency")
	fmt.Fprintf(out, "  monitor    %d user records from %d Kinesis records in %d invocations; order violations %d, duplicates %d, gaps %d; on-failure %d\n",
		ms.Records, mm.RecordsDone, mm.Invocations, ms.OrderViolations, ms.Duplicates, ms.Gaps, mm.OnFailureRecords)
	fmt.Fprintf(out, "             end-to-end (message ts -> processed) p50 %s, p99 %s, max %s\n", msf(e2e.Percentile(50)), msf(e2e.Percentile(99)), msf(e2e.Max))
	fmt.Fprintf(out, "  lastloc.   %d locations applied, %d stale ignored, %d users stored; %d invocations, on-failure %d\n",
		ls.Applied, ls.Stale, d.store.Len(), ml.Invocations, ml.OnFailureRecords)
}

func (d *devConsumers) stop() {
	d.cancel()
	d.wg.Wait()
	for _, c := range d.closers {
		c.Close()
	}
}

// msf formats milliseconds.
func msf(v float64) string { return ms(v / 1000) }
