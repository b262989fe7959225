package esm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"
)

// StartingPosition is where a mapping starts reading the shards present at its start.
type StartingPosition string

// Starting positions.
const (
	TrimHorizon StartingPosition = "TRIM_HORIZON"
	Latest      StartingPosition = "LATEST"
	AtTimestamp StartingPosition = "AT_TIMESTAMP"
)

// RetryForever is MaximumRetryAttempts = -1: retry until the records expire (the AWS default).
const RetryForever = -1

// MaxPayload is Lambda's synchronous invocation payload limit (6 MB).
const MaxPayload = 6 << 20

// KinesisAPI is the part of the Kinesis client a Mapping uses (*kinesis.Client has it).
type KinesisAPI interface {
	DescribeStreamSummary(context.Context, *kinesis.DescribeStreamSummaryInput, ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error)
	ListShards(context.Context, *kinesis.ListShardsInput, ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error)
	GetShardIterator(context.Context, *kinesis.GetShardIteratorInput, ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error)
	GetRecords(context.Context, *kinesis.GetRecordsInput, ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error)
}

// Config configures a Mapping. Zero values take the defaults noted; MaximumRetryAttempts is the
// exception: its zero means no retries, RetryForever (-1) is the AWS default.
//
// By default the timing is AWS's: windows and timeouts in whole seconds, a shard polled once per
// second when it has nothing new. FastTiming lifts those limits for tests.
type Config struct {
	Stream       string // stream name (required)
	FunctionName string // for the function ARN in invocation records; default "function"

	BatchSize int // default 100, at most 10,000
	// MaxBatchingWindow is MaximumBatchingWindowInSeconds: 0 (the default) to 5 minutes, in whole
	// seconds ("You can configure MaximumBatchingWindowInSeconds to any value from 0 seconds to
	// 300 seconds in increments of seconds", Lambda API reference, CreateEventSourceMapping).
	MaxBatchingWindow time.Duration

	StartingPosition          StartingPosition // default TRIM_HORIZON
	StartingPositionTimestamp time.Time        // for AT_TIMESTAMP

	ReportBatchItemFailures    bool
	BisectBatchOnFunctionError bool
	MaximumRetryAttempts       int // -1 (RetryForever) .. 10,000; 0 = no retry
	// MaximumRecordAge is MaximumRecordAgeInSeconds: <= 0 is infinite (AWS: -1), otherwise 60 s
	// to 7 days in whole seconds (Lambda developer guide, "Lambda parameters for Amazon Kinesis
	// Data Streams event source mappings").
	MaximumRecordAge time.Duration
	OnFailure        string // JSONL file receiving invocation records; "" = discard (logged)
	// ConsolidateDiscards writes the discards of one batch as a single invocation record whose
	// range spans all of them (see onfailure.go); default one record per discarded piece.
	ConsolidateDiscards bool

	// FunctionTimeout is the invocation deadline: default 3 s (Lambda's default), 1 s to 900 s in
	// whole seconds.
	FunctionTimeout       time.Duration
	ParallelizationFactor int // lanes per shard, 1..10; default 1
	// InstancePerInvocation starts a fresh function instance for every invocation, retries
	// included: nothing in a function's memory survives from one invocation to the next. Without
	// it each lane (concurrent invocation) has its own instance, replaced after a timeout or a
	// crash. Lambda may route a retry to any execution environment; this is that worst case.
	InstancePerInvocation bool

	// FastTiming allows sub-second windows, timeouts, record ages and polling, and makes the
	// default poll interval 200 ms: for tests. Without it a local run cannot look faster than
	// AWS can be.
	FastTiming           bool
	PollInterval         time.Duration // wait after an empty GetRecords; default 1 s (200 ms with FastTiming)
	ShardRefreshInterval time.Duration // ListShards period; default 1 s
	RetryBackoff         time.Duration // first retry delay, doubling up to 5 s; default 100 ms

	// Faults injects what AWS may do and a local run otherwise never shows.
	Faults Faults

	Logger *slog.Logger     // default: JSON to stderr
	Now    func() time.Time // clock for MaximumRecordAge and timestamps; default time.Now
}

// Faults are injected behaviours of the real service. Each func is called with the shard and the
// first sequence number of the (sub-)batch about to be invoked, and must be safe for concurrent use.
type Faults struct {
	// Throttle reports whether this invocation is throttled: the function is not called, and the
	// batch is retried after RetryBackoff at no retry cost until its records expire ("Before
	// invocation: If a Lambda event source mapping is unable to invoke the function due to
	// throttling or other issues, it retries until the records expire or exceed the maximum age",
	// Lambda developer guide, "Retain discarded batch records for a Kinesis Data Streams event
	// source in Lambda").
	Throttle func(shardID, firstSequenceNumber string) bool
	// Duplicate reports whether a batch the function just handled successfully is delivered once
	// more, whole ("Lambda event source mappings process each event at least once, and duplicate
	// processing of records can occur", Lambda developer guide, "How Lambda processes records from
	// stream and queue-based event sources").
	Duplicate func(shardID, firstSequenceNumber string) bool
}

func wholeSeconds(d time.Duration) bool { return d%time.Second == 0 }

func (c *Config) setDefaults() error {
	if c.Stream == "" {
		return errors.New("esm: Config.Stream is required")
	}
	if c.FunctionName == "" {
		c.FunctionName = "function"
	}
	if c.BatchSize == 0 {
		c.BatchSize = 100
	}
	if c.BatchSize < 1 || c.BatchSize > 10000 {
		return fmt.Errorf("esm: BatchSize %d not in 1..10000", c.BatchSize)
	}
	if c.MaxBatchingWindow < 0 || c.MaxBatchingWindow > 5*time.Minute {
		return fmt.Errorf("esm: MaxBatchingWindow %v not in 0..5m", c.MaxBatchingWindow)
	}
	switch c.StartingPosition {
	case "":
		c.StartingPosition = TrimHorizon
	case TrimHorizon, Latest:
	case AtTimestamp:
		if c.StartingPositionTimestamp.IsZero() {
			return errors.New("esm: AT_TIMESTAMP needs StartingPositionTimestamp")
		}
	default:
		return fmt.Errorf("esm: unknown StartingPosition %q", c.StartingPosition)
	}
	if c.MaximumRetryAttempts < -1 || c.MaximumRetryAttempts > 10000 {
		return fmt.Errorf("esm: MaximumRetryAttempts %d not in -1..10000", c.MaximumRetryAttempts)
	}
	if c.FunctionTimeout <= 0 {
		c.FunctionTimeout = 3 * time.Second
	}
	if c.ParallelizationFactor == 0 {
		c.ParallelizationFactor = 1
	}
	if c.ParallelizationFactor < 1 || c.ParallelizationFactor > 10 {
		return fmt.Errorf("esm: ParallelizationFactor %d not in 1..10", c.ParallelizationFactor)
	}
	if c.PollInterval <= 0 {
		// "Lambda polls each shard in your Kinesis stream for records at a base rate of once per
		// second" (Lambda developer guide, "Using Lambda to process records from Amazon Kinesis
		// Data Streams", polling and batching).
		c.PollInterval = time.Second
		if c.FastTiming {
			c.PollInterval = 200 * time.Millisecond
		}
	}
	if !c.FastTiming {
		switch {
		case !wholeSeconds(c.MaxBatchingWindow):
			return fmt.Errorf("esm: MaxBatchingWindow %v is not whole seconds (FastTiming allows it)", c.MaxBatchingWindow)
		case !wholeSeconds(c.FunctionTimeout) || c.FunctionTimeout > 900*time.Second:
			return fmt.Errorf("esm: FunctionTimeout %v not whole seconds in 1..900 s (FastTiming allows it)", c.FunctionTimeout)
		case c.MaximumRecordAge > 0 && (!wholeSeconds(c.MaximumRecordAge) || c.MaximumRecordAge < time.Minute || c.MaximumRecordAge > 7*24*time.Hour):
			return fmt.Errorf("esm: MaximumRecordAge %v not whole seconds in 60 s..7 days (FastTiming allows it)", c.MaximumRecordAge)
		case c.PollInterval < time.Second:
			return fmt.Errorf("esm: PollInterval %v below Lambda's once per second (FastTiming allows it)", c.PollInterval)
		}
	}
	if c.ShardRefreshInterval <= 0 {
		c.ShardRefreshInterval = time.Second
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = 100 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}
