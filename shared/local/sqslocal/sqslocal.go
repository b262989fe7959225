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
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/nsqk/nsqk/shared/local/nodeproc"
)

// Region is the region every local client uses.
const Region = nodeproc.Region

// Options configures Start (default StartTimeout: 60 s).
type Options = nodeproc.Options

// Server is a running local SQS endpoint.
type Server struct {
	Endpoint string // http://127.0.0.1:PORT
	*nodeproc.Proc
}

// Start launches fauxqs and waits until it answers ListQueues.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.StartTimeout == 0 {
		o.StartTimeout = 60 * time.Second
	}
	cli, err := nodeproc.Script("fauxqs", "dist", "cli.js")
	if err != nil {
		return nil, fmt.Errorf("sqslocal: %w", err)
	}
	port, endpoint, err := nodeproc.Endpoint(o.Port)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("node", cli)
	cmd.Dir = filepath.Dir(cli)
	cmd.Env = append(os.Environ(), "FAUXQS_PORT="+strconv.Itoa(port), "FAUXQS_LOGGER=false", "FAUXQS_DEFAULT_REGION="+Region)
	cmd.Stdout, cmd.Stderr = o.Stdout, o.Stderr
	c := NewClient(endpoint)
	proc, err := nodeproc.Start(ctx, "fauxqs", cmd, o.StartTimeout, func(ctx context.Context) error {
		_, err := c.ListQueues(ctx, &sqs.ListQueuesInput{}, func(o *sqs.Options) { o.RetryMaxAttempts = 1 })
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqslocal: %w", err)
	}
	return &Server{Endpoint: endpoint, Proc: proc}, nil
}

// Client returns an SDK client for this server.
func (s *Server) Client(optFns ...func(*sqs.Options)) *sqs.Client {
	return NewClient(s.Endpoint, optFns...)
}

// NewClient returns an SQS client for a local endpoint: static credentials, region us-east-1.
func NewClient(endpoint string, optFns ...func(*sqs.Options)) *sqs.Client {
	return sqs.NewFromConfig(nodeproc.AWSConfig(), append([]func(*sqs.Options){func(o *sqs.Options) {
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
