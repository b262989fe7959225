// Package kinesislocal starts a real Kinesis emulator from the repository's pinned npm tooling
// (_tools/node_modules) and hands out SDK clients for it. Two emulators are supported:
//
//   - kinesalite: fast, exact AWS hash ranges; no UpdateShardCount, no on-demand mode.
//   - kinesis-mock (npm "kinesis-local"): resharding, on-demand and ChildShards; slow.
//
// The emulator runs as a child process in its own process group and dies with the caller.
package kinesislocal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/nsqk/nsqk/shared/local/nodeproc"
)

// Kind names an emulator.
type Kind string

const (
	Kinesalite  Kind = "kinesalite"
	KinesisMock Kind = "kinesis-mock"
)

// Region is the region every local client uses.
const Region = nodeproc.Region

// Options configures Start.
type Options struct {
	Kind Kind // default Kinesalite
	// ShardLimit is the emulator's account shard limit; default 100.
	ShardLimit int
	// ReshardDelay is how long kinesis-mock keeps a stream UPDATING/CREATING; default 100 ms
	// (the emulator's own default is 500 ms).
	ReshardDelay time.Duration
	// Port to listen on; default a free port.
	Port int
	// Stdout/Stderr receive the emulator's output; default discarded.
	Stdout, Stderr *os.File
	// StartTimeout bounds waiting for the emulator to answer; default 30 s.
	StartTimeout time.Duration
}

// Emulator is a running emulator process.
type Emulator struct {
	Kind     Kind
	Endpoint string // http://127.0.0.1:PORT
	*nodeproc.Proc
}

// ToolsDir finds the directory holding the pinned node_modules (see nodeproc.ToolsDir).
func ToolsDir() (string, error) { return nodeproc.ToolsDir() }

// Start launches an emulator and waits until it answers ListStreams.
func Start(ctx context.Context, o Options) (*Emulator, error) {
	if o.Kind == "" {
		o.Kind = Kinesalite
	}
	if o.ShardLimit == 0 {
		o.ShardLimit = 100
	}
	if o.ReshardDelay == 0 {
		o.ReshardDelay = 100 * time.Millisecond
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 30 * time.Second
	}
	tools, err := ToolsDir()
	if err != nil {
		return nil, err
	}
	port, endpoint, err := nodeproc.Endpoint(o.Port)
	if err != nil {
		return nil, err
	}
	var cmd *exec.Cmd
	switch o.Kind {
	case Kinesalite:
		cmd = exec.Command("node", filepath.Join(tools, "node_modules", "kinesalite", "cli.js"),
			"--port", strconv.Itoa(port), "--shardLimit", strconv.Itoa(o.ShardLimit),
			"--createStreamMs", "0", "--deleteStreamMs", "0", "--updateStreamMs", "0")
	case KinesisMock:
		tlsPort, err := FreePort()
		if err != nil {
			return nil, err
		}
		dir := filepath.Join(tools, "node_modules", "kinesis-local")
		cmd = exec.Command("node", filepath.Join(dir, "main.js"))
		d := o.ReshardDelay.String()
		cmd.Env = append(os.Environ(),
			"KINESIS_MOCK_CERT_PATH="+filepath.Join(dir, "server.json"),
			"KINESIS_MOCK_PLAIN_PORT="+strconv.Itoa(port),
			"KINESIS_MOCK_TLS_PORT="+strconv.Itoa(tlsPort),
			"SHARD_LIMIT="+strconv.Itoa(o.ShardLimit),
			"CREATE_STREAM_DURATION="+d, "DELETE_STREAM_DURATION="+d,
			"MERGE_SHARDS_DURATION="+d, "SPLIT_SHARD_DURATION="+d,
			"UPDATE_SHARD_COUNT_DURATION="+d, "UPDATE_STREAM_MODE_DURATION="+d,
			"REGISTER_STREAM_CONSUMER_DURATION="+d, "DEREGISTER_STREAM_CONSUMER_DURATION="+d,
			"START_STREAM_ENCRYPTION_DURATION="+d, "STOP_STREAM_ENCRYPTION_DURATION="+d,
			"LOG_LEVEL=WARN")
	default:
		return nil, fmt.Errorf("kinesislocal: unknown emulator %q", o.Kind)
	}
	cmd.Dir = tools
	cmd.Stdout, cmd.Stderr = o.Stdout, o.Stderr
	c := NewClient(endpoint)
	proc, err := nodeproc.Start(ctx, string(o.Kind), cmd, o.StartTimeout, func(ctx context.Context) error {
		_, err := c.ListStreams(ctx, &kinesis.ListStreamsInput{}, func(o *kinesis.Options) { o.RetryMaxAttempts = 1 })
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("kinesislocal: %w", err)
	}
	return &Emulator{Kind: o.Kind, Endpoint: endpoint, Proc: proc}, nil
}

// Client returns an SDK client for this emulator.
func (e *Emulator) Client(optFns ...func(*kinesis.Options)) *kinesis.Client {
	return NewClient(e.Endpoint, optFns...)
}

// NewClient returns a Kinesis client for a local endpoint: static credentials (the emulators need
// an Authorization header but accept any), region us-east-1.
func NewClient(endpoint string, optFns ...func(*kinesis.Options)) *kinesis.Client {
	return kinesis.NewFromConfig(nodeproc.AWSConfig(), append([]func(*kinesis.Options){func(o *kinesis.Options) {
		o.BaseEndpoint = aws.String(endpoint)
	}}, optFns...)...)
}

// CreateStream creates a provisioned stream with the given shard count and waits until it is ACTIVE.
func CreateStream(ctx context.Context, c *kinesis.Client, name string, shards int32) error {
	_, err := c.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(shards)})
	if err != nil {
		return fmt.Errorf("create stream %s: %w", name, err)
	}
	return WaitActive(ctx, c, name)
}

// WaitActive waits until the stream's status is ACTIVE (after create or a reshard).
func WaitActive(ctx context.Context, c *kinesis.Client, name string) error {
	return nodeproc.Until(ctx, "stream "+name+" not active", func(ctx context.Context) (bool, error) {
		out, err := c.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
		var nf *types.ResourceNotFoundException
		if err != nil && errors.As(err, &nf) {
			err = nil // not visible yet
		}
		return err == nil && out != nil && out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive, err
	})
}

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func FreePort() (int, error) { return nodeproc.FreePort() }
