package consumer

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// LambdaHandler is the Lambda handler of a consumer function (Processor.Handle's signature).
type LambdaHandler func(context.Context, events.KinesisEvent) (events.KinesisEventResponse, error)

// Env is what Main hands a function's constructor.
type Env struct {
	// Setup is filled from the environment: Name (AWS_LAMBDA_FUNCTION_NAME, else the name given
	// to Main), Checkpoints (DynamoCheckpoints when NSQK_CHECKPOINT_TABLE is set, memory
	// otherwise), DeadLetters (SQS when NSQK_DEAD_LETTER_QUEUE_URL is set); with -invoke, metrics
	// and logs go to stderr so that stdout holds only the response.
	Setup FunctionSetup
	// AWS is the SDK configuration from its standard chain (AWS_REGION, AWS_ENDPOINT_URL_*, ...).
	AWS aws.Config
	// Local is true under -invoke: one run on an event file, where a resource the function needs
	// in Lambda may be replaced by a local one when its variable is not set.
	Local bool
}

// Main is the whole main of a consumer function whose work is one Handler per user record:
//
//	func main() { consumer.Main("orders", handle) }
//
// In Lambda (provided.al2023, handler bootstrap) it serves the function with lambda.Start; with
// `-invoke EVENT.json` it runs the handler once on a Lambda event file, prints the response on
// stdout and exits non-zero on a function error (that is `make invoke FN=name EVENT=...`). It
// logs at start which checkpoint store and dead-letter queue the function uses.
func Main(name string, h Handler) {
	MainFunc(name, func(_ context.Context, env Env) (LambdaHandler, error) {
		p, _, _ := env.Setup.Build(h)
		return p.Handle, nil
	})
}

// MainFunc is Main for a function that builds its handler itself from env (to add its own
// metrics to the registry FunctionSetup.Build returns, or to open its own stores).
func MainFunc(name string, build func(context.Context, Env) (LambdaHandler, error)) {
	err := run(context.Background(), name, os.Args[1:], os.Stdout, os.Stderr,
		func(h LambdaHandler) { lambda.Start(h) }, build)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// run is MainFunc with its surroundings passed in.
func run(ctx context.Context, name string, args []string, stdout, stderr io.Writer,
	start func(LambdaHandler), build func(context.Context, Env) (LambdaHandler, error)) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	invoke := fs.String("invoke", "", "run the handler once on this Lambda event file, print the response and exit")
	timeout := fs.Duration("timeout", 30*time.Second, "with -invoke: the invocation's timeout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("AWS configuration: %w", err)
	}
	setup, attrs, err := SetupFromEnv(name, awsCfg)
	if err != nil {
		return err
	}
	env := Env{Setup: setup, AWS: awsCfg, Local: *invoke != ""}
	env.Setup.Metrics = stdout
	if env.Local {
		env.Setup.Metrics = stderr
	}
	env.Setup.Logger = slog.New(slog.NewJSONHandler(stderr, nil))
	env.Setup.Logger.InfoContext(ctx, "consumer function starting", attrs...)
	h, err := build(ctx, env)
	if err != nil {
		return err
	}
	if !env.Local {
		start(h)
		return nil
	}
	return InvokeFile(ctx, lambda.NewHandler(h), *invoke, env.Setup.Name, *timeout, stdout)
}

// SetupFromEnv returns the FunctionSetup the environment describes for function name (see Env),
// and the settings it chose, for the start-up log line.
func SetupFromEnv(name string, awsCfg aws.Config) (FunctionSetup, []any, error) {
	s := FunctionSetup{Name: name}
	if n := os.Getenv("AWS_LAMBDA_FUNCTION_NAME"); n != "" {
		s.Name = n
	}
	attrs := []any{"function", s.Name}
	if table := os.Getenv(CheckpointTableEnv); table != "" {
		retention := time.Duration(0)
		if v := os.Getenv(StreamRetentionEnv); v != "" {
			h, err := strconv.Atoi(v)
			if err != nil || h <= 0 {
				return s, nil, fmt.Errorf("%s=%q: want a positive number of hours", StreamRetentionEnv, v)
			}
			retention = time.Duration(h) * time.Hour
		}
		cp := NewDynamoCheckpoints(dynamodb.NewFromConfig(awsCfg), table, s.Name, retention)
		s.Checkpoints = cp
		attrs = append(attrs, "checkpoints", "dynamodb", "checkpoint_table", table, "checkpoint_ttl", cp.ttl.String())
	} else {
		s.Checkpoints = NewMemoryCheckpoints()
		attrs = append(attrs, "checkpoints", "memory",
			"checkpoints_note", CheckpointTableEnv+" not set: a redelivered aggregate skips its processed sub-records only on the same warm instance")
	}
	if url := os.Getenv(DeadLetterQueueEnv); url != "" {
		s.DeadLetters = NewSQSDeadLetters(sqs.NewFromConfig(awsCfg), url)
		attrs = append(attrs, "dead_letter_queue", url)
	} else {
		attrs = append(attrs, "dead_letter_queue", "none",
			"dead_letter_note", DeadLetterQueueEnv+" not set: a permanent handler error stops the batch like a transient one")
	}
	return s, attrs, nil
}
