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
type Config struct {
	Stream       string // stream name (required)
	FunctionName string // for the function ARN in invocation records; default "function"

	BatchSize         int           // default 100, at most 10,000
	MaxBatchingWindow time.Duration // default 0, at most 5 minutes

	StartingPosition          StartingPosition // default TRIM_HORIZON
	StartingPositionTimestamp time.Time        // for AT_TIMESTAMP

	ReportBatchItemFailures    bool
	BisectBatchOnFunctionError bool
	MaximumRetryAttempts       int           // -1 (RetryForever) .. 10,000; 0 = no retry
	MaximumRecordAge           time.Duration // <= 0: infinite
	OnFailure                  string        // JSONL file receiving invocation records; "" = discard (logged)

	FunctionTimeout       time.Duration // invocation deadline; default 3 s (Lambda's default)
	ParallelizationFactor int           // lanes per shard, 1..10; default 1

	PollInterval         time.Duration // wait after an empty GetRecords; default 200 ms
	ShardRefreshInterval time.Duration // ListShards period; default 1 s
	RetryBackoff         time.Duration // first retry delay, doubling up to 5 s; default 100 ms

	Logger *slog.Logger     // default: JSON to stderr
	Now    func() time.Time // clock for MaximumRecordAge and timestamps; default time.Now
}

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
		c.PollInterval = 200 * time.Millisecond
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
