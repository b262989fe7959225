// Package dynalocal starts dynalite, a DynamoDB implementation on LevelDB (in memory here), from
// the repository's pinned npm tooling (_tools/node_modules) and hands out SDK clients for it.
//
// What dynalite does not implement, and what the code on top of it must therefore not rely on
// alone: ReturnValuesOnConditionCheckFailure (a failed condition returns no item), and
// UpdateTimeToLive (items are never expired; the TTL attribute is written all the same).
//
// Local environment: tests and `nsqk dev` use this; product code never does. The process runs in
// its own process group and dies with the caller.
package dynalocal

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/nsqk/nsqk/shared/local/nodeproc"
)

// Region is the region every local client uses.
const Region = nodeproc.Region

// Options configures Start (default StartTimeout: 30 s).
type Options = nodeproc.Options

// Dynalite is a running dynalite process.
type Dynalite struct {
	Endpoint string // http://127.0.0.1:PORT
	*nodeproc.Proc
}

// Start launches dynalite (tables leave CREATING at once) and waits until it answers ListTables.
func Start(ctx context.Context, o Options) (*Dynalite, error) {
	if o.StartTimeout == 0 {
		o.StartTimeout = 30 * time.Second
	}
	cli, err := nodeproc.Script("dynalite", "cli.js")
	if err != nil {
		return nil, fmt.Errorf("dynalocal: %w", err)
	}
	port, endpoint, err := nodeproc.Endpoint(o.Port)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("node", cli, "--host", "127.0.0.1", "--port", strconv.Itoa(port),
		"--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0")
	cmd.Dir = filepath.Dir(cli)
	cmd.Stdout, cmd.Stderr = o.Stdout, o.Stderr
	c := NewClient(endpoint)
	proc, err := nodeproc.Start(ctx, "dynalite", cmd, o.StartTimeout, func(ctx context.Context) error {
		_, err := c.ListTables(ctx, &dynamodb.ListTablesInput{}, func(o *dynamodb.Options) { o.RetryMaxAttempts = 1 })
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dynalocal: %w", err)
	}
	return &Dynalite{Endpoint: endpoint, Proc: proc}, nil
}

// Client returns an SDK client for this dynalite.
func (d *Dynalite) Client(optFns ...func(*dynamodb.Options)) *dynamodb.Client {
	return NewClient(d.Endpoint, optFns...)
}

// NewClient returns a DynamoDB client for a local endpoint: static credentials, region us-east-1.
func NewClient(endpoint string, optFns ...func(*dynamodb.Options)) *dynamodb.Client {
	return dynamodb.NewFromConfig(nodeproc.AWSConfig(), append([]func(*dynamodb.Options){func(o *dynamodb.Options) {
		o.BaseEndpoint = aws.String(endpoint)
	}}, optFns...)...)
}

// CreateTable creates an on-demand table with a string partition key named hashKey, as the CDK
// app creates the consumers' tables, and waits until it is ACTIVE.
func CreateTable(ctx context.Context, c *dynamodb.Client, name, hashKey string) error {
	_, err := c.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(name),
		BillingMode:          types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String(hashKey), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String(hashKey), KeyType: types.KeyTypeHash}},
	})
	if err != nil {
		return fmt.Errorf("create table %s: %w", name, err)
	}
	return nodeproc.Until(ctx, "table "+name+" not active", func(ctx context.Context) (bool, error) {
		out, err := c.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(name)})
		var nf *types.ResourceNotFoundException
		if err != nil && errors.As(err, &nf) {
			err = nil
		}
		return err == nil && out != nil && out.Table.TableStatus == types.TableStatusActive, err
	})
}
