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

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/nsqk/nsqk/shared/consumer"
	"github.com/nsqk/nsqk/shared/lastlocation"
	"github.com/nsqk/nsqk/shared/local/dynalocal"
	"github.com/nsqk/nsqk/shared/local/emfread"
	"github.com/nsqk/nsqk/shared/local/esm"
	"github.com/nsqk/nsqk/shared/local/sqslocal"
	"github.com/nsqk/nsqk/shared/monitor"
)

// Names of the local resources, as the stack would name its own.
const (
	devLocationsTable  = "nsqk-dev-locations"
	devCheckpointTable = "nsqk-dev-checkpoints"
)

// devConsumers runs both built-in Lambda functions in-process and every own consumer
// (functions/<name>) as its own executable through lambdart, each behind its own emulated event
// source mapping, as `make dev` shows them: lastlocation's table and the checkpoints in dynalite,
// each function's dead-letter queue in a local SQS; the built-ins' EMF lines go to files and
// into per-function summaries, an own consumer's output to its files.
type devConsumers struct {
	mon     *monitor.Monitor
	ll      *lastlocation.Function
	mm, ml  *esm.Mapping
	sm, sl  *emfread.Summary
	dyn     *dynalocal.Dynalite
	dc      *dynamodb.Client
	sqs     *sqslocal.Server
	sc      *sqs.Client
	dlqs    map[string]string // function -> dead-letter queue URL
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	errs    chan error
	closers []io.Closer
	kc      *kinesis.Client
	own     []*ownConsumer
}

// startConsumers starts the consumers; own consumers (built already) get ownEnv (the endpoints
// of the local AWS stand-ins) besides their checkpoint table and dead-letter queue.
func startConsumers(ctx context.Context, kc *kinesis.Client, stream, dir string, own []*ownConsumer, ownEnv []string) (_ *devConsumers, err error) {
	d := &devConsumers{sm: &emfread.Summary{}, sl: &emfread.Summary{}, errs: make(chan error, 2+len(own)), dlqs: map[string]string{},
		kc: kc, own: own}
	defer func() {
		if err != nil {
			d.closeAll()
		}
	}()
	for _, name := range []string{"consumers.log", "monitor-metrics.jsonl", "lastlocation-metrics.jsonl"} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		d.closers = append(d.closers, f)
	}
	logf, mf, lf := d.closers[0].(*os.File), d.closers[1].(*os.File), d.closers[2].(*os.File)
	log := slog.New(slog.NewJSONHandler(logf, &slog.HandlerOptions{Level: slog.LevelWarn}))

	if d.dyn, err = dynalocal.Start(ctx, dynalocal.Options{}); err != nil {
		return nil, err
	}
	d.closers = append(d.closers, d.dyn)
	d.dc = d.dyn.Client()
	for table, key := range map[string]string{devLocationsTable: "user_id", devCheckpointTable: "id"} {
		if err := dynalocal.CreateTable(ctx, d.dc, table, key); err != nil {
			return nil, err
		}
	}
	if d.sqs, err = sqslocal.Start(ctx, sqslocal.Options{}); err != nil {
		return nil, err
	}
	d.closers = append(d.closers, d.sqs)
	d.sc = d.sqs.Client()
	setup := func(name string, metrics io.Writer) (consumer.FunctionSetup, error) {
		url, err := sqslocal.CreateQueue(ctx, d.sc, name+"-dead-letter")
		if err != nil {
			return consumer.FunctionSetup{}, err
		}
		d.dlqs[name] = url
		return consumer.FunctionSetup{Name: name, Metrics: metrics, Logger: log,
			Checkpoints: consumer.NewDynamoCheckpoints(d.dc, devCheckpointTable, name, 24*time.Hour),
			DeadLetters: consumer.NewSQSDeadLetters(d.sc, url)}, nil
	}
	ms, err := setup("nsqk-monitor", &emfread.LineWriter{Summary: d.sm, Next: mf})
	if err != nil {
		return nil, err
	}
	ls, err := setup("nsqk-lastlocation", &emfread.LineWriter{Summary: d.sl, Next: lf})
	if err != nil {
		return nil, err
	}
	d.mon = monitor.New(monitor.Config{FunctionSetup: ms})
	d.ll = lastlocation.New(lastlocation.Config{FunctionSetup: ls, Store: lastlocation.NewDynamoStore(d.dc, devLocationsTable)})
	// AWS's timing (no batching window, as the stack deploys by default; shards polled once per
	// second): the latency shown is one AWS can deliver.
	base := esm.Config{Stream: stream, BatchSize: 100,
		ReportBatchItemFailures: true, BisectBatchOnFunctionError: true, MaximumRetryAttempts: 3,
		MaximumRecordAge: time.Hour, FunctionTimeout: 30 * time.Second, Logger: log}
	mappings := []*esm.Mapping{}
	for _, c := range own {
		url, err := sqslocal.CreateQueue(ctx, d.sc, c.function+"-dead-letter")
		if err != nil {
			return nil, err
		}
		d.dlqs[c.function] = url
		env := append([]string{
			"AWS_ENDPOINT_URL_DYNAMODB=" + d.dyn.Endpoint,
			"AWS_ENDPOINT_URL_SQS=" + d.sqs.Endpoint,
			consumer.CheckpointTableEnv + "=" + devCheckpointTable,
			consumer.DeadLetterQueueEnv + "=" + url,
			consumer.StreamRetentionEnv + "=24",
		}, ownEnv...)
		if err := c.start(d, base, dir, env); err != nil {
			return nil, err
		}
		mappings = append(mappings, c.m)
	}
	cm, cl := base, base
	cm.FunctionName, cm.OnFailure = "nsqk-monitor", filepath.Join(dir, "monitor-on-failure.jsonl")
	cl.FunctionName, cl.OnFailure = "nsqk-lastlocation", filepath.Join(dir, "lastlocation-on-failure.jsonl")
	// One function value behind all instances of each mapping, so that the statistics shown sum
	// them all (in AWS each execution environment would count only its own).
	d.mm, d.ml = esm.New(kc, esm.Shared(d.mon.Handle), cm), esm.New(kc, esm.Shared(d.ll.Handle), cl)
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.cancel = cancel
	for _, m := range append([]*esm.Mapping{d.mm, d.ml}, mappings...) {
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

// standIns says where the consumers' AWS resources are.
func (d *devConsumers) standIns() string {
	queues := "nsqk-monitor-dead-letter, nsqk-lastlocation-dead-letter"
	for _, c := range d.own {
		queues += ", " + c.function + "-dead-letter"
	}
	return fmt.Sprintf("DynamoDB: dynalite on %s (tables %s for lastlocation, %s for the checkpoints); SQS: fauxqs on %s (dead-letter queues %s)",
		d.dyn.Endpoint, devLocationsTable, devCheckpointTable, d.sqs.Endpoint, queues)
}

func (d *devConsumers) status() string {
	ms, ls := d.mon.Stats(), d.ll.Stats()
	e2e, _ := d.sm.Get("E2ELatency")
	line := fmt.Sprintf("monitor: %d records, %d order violations, %d duplicates, e2e p50 %s p99 %s | lastlocation: %d applied, %d stale",
		ms.Records, ms.OrderViolations, ms.Duplicates, msf(e2e.Percentile(50)), msf(e2e.Percentile(99)), ls.Applied, ls.Stale)
	for _, c := range d.own {
		s := c.m.Stats()
		line += fmt.Sprintf(" | %s: %d Kinesis records done, %d function errors", c.name, s.RecordsDone, s.FunctionErrors)
	}
	return line
}

// wait returns once every mapping has handled n Kinesis records.
func (d *devConsumers) wait(ctx context.Context, n int64, tick <-chan time.Time, status func()) error {
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	behind := func() bool {
		for _, c := range d.own {
			if c.m.Stats().RecordsDone < n {
				return true
			}
		}
		return d.mm.Stats().RecordsDone < n || d.ml.Stats().RecordsDone < n
	}
	for behind() {
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

// users counts the items of lastlocation's table.
func (d *devConsumers) users(ctx context.Context) (int64, error) {
	var n int64
	p := dynamodb.NewScanPaginator(d.dc, &dynamodb.ScanInput{TableName: aws.String(devLocationsTable), Select: types.SelectCount})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return n, err
		}
		n += int64(out.Count)
	}
	return n, nil
}

// deadLettered counts the messages in a function's dead-letter queue.
func (d *devConsumers) deadLettered(ctx context.Context, function string) (int64, error) {
	out, err := d.sc.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(d.dlqs[function]),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages}})
	if err != nil {
		return 0, err
	}
	var n int64
	_, err = fmt.Sscan(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessages)], &n)
	return n, err
}

func (d *devConsumers) summary(ctx context.Context, out io.Writer) {
	ms, ls := d.mon.Stats(), d.ll.Stats()
	mm, ml := d.mm.Stats(), d.ml.Stats()
	e2e, _ := d.sm.Get("E2ELatency")
	count := func(n int64, err error) string {
		if err != nil {
			return "? (" + err.Error() + ")"
		}
		return fmt.Sprint(n)
	}
	users := count(d.users(ctx))
	fmt.Fprintf(out, "  monitor    %d user records from %d Kinesis records in %d invocations; order violations %d, duplicates %d, gaps %d; dead-lettered %s; on-failure %d\n",
		ms.Records, mm.RecordsDone, mm.Invocations, ms.OrderViolations, ms.Duplicates, ms.Gaps, count(d.deadLettered(ctx, "nsqk-monitor")), mm.OnFailureRecords)
	fmt.Fprintf(out, "             end-to-end (message ts -> processed) p50 %s, p99 %s, max %s\n", msf(e2e.Percentile(50)), msf(e2e.Percentile(99)), msf(e2e.Max))
	fmt.Fprintf(out, "  lastloc.   %d locations applied, %d stale ignored, %s users stored in DynamoDB (dynalite, table %s); %d invocations; dead-lettered %s; on-failure %d\n",
		ls.Applied, ls.Stale, users, devLocationsTable, ml.Invocations, count(d.deadLettered(ctx, "nsqk-lastlocation")), ml.OnFailureRecords)
	for _, c := range d.own {
		s, rs := c.m.Stats(), c.rt.Stats()
		fmt.Fprintf(out, "  %-10s %d user records processed (its Records metric) from %d Kinesis records done in %d invocations (%d function errors; %d processes, %d crashed, %d timed out); dead-lettered %s; on-failure %d\n",
			c.name, c.userRecords(), s.RecordsDone, s.Invocations, s.FunctionErrors, rs.Processes, rs.Crashes, rs.Timeouts, count(d.deadLettered(ctx, c.function)), s.OnFailureRecords)
		e2e, _ := c.emf.Get("E2ELatency")
		fmt.Fprintf(out, "             end-to-end (its E2ELatency metric) p50 %s, p99 %s; logs %s, EMF %s, on-failure %s\n", msf(e2e.Percentile(50)), msf(e2e.Percentile(99)),
			c.stderr, c.stdout, filepath.Join(filepath.Dir(c.stderr), c.name+"-on-failure.jsonl"))
	}
	fmt.Fprintf(out, "  consumers  checkpoints in DynamoDB (dynalite, table %s); dead-letter queues in SQS (fauxqs)\n", devCheckpointTable)
}

// halt stops the mappings and the own consumers' processes, so that everything they wrote is
// in their files and summaries.
func (d *devConsumers) halt() {
	d.cancel()
	d.wg.Wait()
	for _, c := range d.own {
		c.rt.Close()
	}
}

func (d *devConsumers) stop() {
	d.halt()
	d.closeAll()
}

// closeAll stops the stand-ins and closes the files, newest first.
func (d *devConsumers) closeAll() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i].Close()
	}
}

// msf formats milliseconds.
func msf(v float64) string { return ms(v / 1000) }
