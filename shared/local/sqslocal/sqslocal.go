// Package sqslocal starts a local Amazon SQS endpoint for tests and `nsqk dev`: fauxqs (npm,
// pinned in _tools/package.json), run with node as a child process, and hands out SDK clients
// for it.
//
// Why fauxqs: the SQS client of aws-sdk-go-v2 speaks the AWS JSON 1.0 protocol
// (X-Amz-Target: AmazonSQS.SendMessage). goaws v0.4.5, the newest release in the Go module
// proxy, reads only the older query protocol (an Action form field): every call of the SDK gets
// "400 Bad Request". fauxqs speaks the JSON protocol with real SQS semantics (queue URLs,
// receive, visibility timeout, delete, message attributes), and needs nothing but Node, like the
// Kinesis and DynamoDB stand-ins. Version 1.9.2 is the newest that runs on Node 20 (later ones
// need node:sqlite).
//
// Local environment: tests and `nsqk dev` use this; product code never does. The process runs in
// its own process group and dies with the caller.
package sqslocal

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/nsqk/nsqk/shared/local/kinesislocal"
)

// Region is the region every local client uses.
const Region = "us-east-1"

// Options configures Start.
type Options struct {
	// Port to listen on; default a free port.
	Port int
	// Stdout/Stderr receive the server's output (one access-log line per request); default discarded.
	Stdout, Stderr *os.File
	// StartTimeout bounds waiting for the server to answer; default 60 s.
	StartTimeout time.Duration
}

// Server is a running local SQS endpoint.
type Server struct {
	Endpoint string // http://127.0.0.1:PORT
	cmd      *exec.Cmd
	waitErr  chan error
	once     sync.Once
}

// command returns how to run fauxqs on port.
func command(port int) (*exec.Cmd, error) {
	tools, err := kinesislocal.ToolsDir()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("node", filepath.Join(tools, "node_modules", "fauxqs", "dist", "cli.js"))
	cmd.Dir = tools
	cmd.Env = append(os.Environ(), "FAUXQS_PORT="+strconv.Itoa(port), "FAUXQS_LOGGER=false", "FAUXQS_DEFAULT_REGION="+Region)
	return cmd, nil
}

// Start launches the server and waits until it answers ListQueues.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.StartTimeout == 0 {
		o.StartTimeout = 60 * time.Second
	}
	port := o.Port
	if port == 0 {
		var err error
		if port, err = kinesislocal.FreePort(); err != nil {
			return nil, err
		}
	}
	cmd, err := command(port)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = o.Stdout, o.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("sqslocal: start %s: %w", cmd.Path, err)
	}
	s := &Server{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd, waitErr: make(chan error, 1)}
	go func() { s.waitErr <- cmd.Wait() }()
	if err := s.waitReady(ctx, o.StartTimeout); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := s.Client()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := c.ListQueues(rctx, &sqs.ListQueuesInput{}, func(o *sqs.Options) { o.RetryMaxAttempts = 1 })
		rcancel()
		if err == nil {
			return nil
		}
		select {
		case werr := <-s.waitErr:
			s.waitErr <- werr
			return fmt.Errorf("sqslocal: %s exited before it was ready (run `make tools`): %v", s.cmd.Path, werr)
		case <-ctx.Done():
			return fmt.Errorf("sqslocal: not ready after %s: %v", timeout, err)
		case <-tick.C:
		}
	}
}

// Close kills the server (its whole process group) and waits for it.
func (s *Server) Close() error {
	s.once.Do(func() {
		if s.cmd.Process != nil {
			syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		}
		<-s.waitErr
	})
	return nil
}

// Client returns an SDK client for this server.
func (s *Server) Client(optFns ...func(*sqs.Options)) *sqs.Client {
	return NewClient(s.Endpoint, optFns...)
}

// NewClient returns an SQS client for a local endpoint: static credentials, region us-east-1.
func NewClient(endpoint string, optFns ...func(*sqs.Options)) *sqs.Client {
	cfg := aws.Config{
		Region:      Region,
		Credentials: credentials.NewStaticCredentialsProvider("local", "local", ""),
	}
	return sqs.NewFromConfig(cfg, append([]func(*sqs.Options){func(o *sqs.Options) {
		o.BaseEndpoint = aws.String(endpoint)
	}}, optFns...)...)
}

// CreateQueue creates a standard queue and returns its URL.
func CreateQueue(ctx context.Context, c *sqs.Client, name string) (string, error) {
	out, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name)})
	if err != nil {
		return "", fmt.Errorf("create queue %s: %w", name, err)
	}
	return aws.ToString(out.QueueUrl), nil
}

// Drain receives (and deletes) every message visible in the queue until a receive returns
// none, and returns the messages in the order received.
func Drain(ctx context.Context, c *sqs.Client, url string) ([]types.Message, error) {
	var all []types.Message
	for {
		out, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(url), MaxNumberOfMessages: 10,
			MessageAttributeNames: []string{"All"}})
		if err != nil {
			return all, err
		}
		if len(out.Messages) == 0 {
			return all, nil
		}
		for _, m := range out.Messages {
			all = append(all, m)
			if _, err := c.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(url), ReceiptHandle: m.ReceiptHandle}); err != nil {
				return all, err
			}
		}
	}
}
