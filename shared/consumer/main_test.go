package consumer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nsqk/nsqk/shared/local/localtest"
	"github.com/nsqk/nsqk/shared/local/sqslocal"
)

// localAWS points the SDK's standard chain at local endpoints, as a user would with
// AWS_ENDPOINT_URL_<SERVICE>.
func localAWS(t *testing.T, dynamo, sqsEndpoint string) {
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_ACCESS_KEY_ID", "local")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "local")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamo)
	t.Setenv("AWS_ENDPOINT_URL_SQS", sqsEndpoint)
}

func eventFile(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "event.json")
	if err := os.WriteFile(path, mustJSON(t, poisonEvent(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestInvokeWithTheStackEnvironment runs Main's -invoke path with the variables the stack
// sets: the checkpoints go to DynamoDB, the poison record to the SQS queue.
func TestInvokeWithTheStackEnvironment(t *testing.T) {
	d := localtest.Dynamo(t)
	q := localtest.SQS(t)
	sc := q.Client()
	url := localtest.Queue(t, sc)
	table := localtest.Table(t, d.Client(), "id")
	localAWS(t, d.Endpoint, q.Endpoint)
	t.Setenv(CheckpointTableEnv, table)
	t.Setenv(StreamRetentionEnv, "48")
	t.Setenv(DeadLetterQueueEnv, url)
	t.Setenv("AWS_LAMBDA_FUNCTION_NAME", "team-orders")
	var stdout, stderr bytes.Buffer
	h := poisonHandler()
	var got Env
	err := run(context.Background(), "orders", []string{"-invoke", eventFile(t)}, &stdout, &stderr,
		func(LambdaHandler) { t.Error("lambda.Start called under -invoke") },
		func(_ context.Context, env Env) (LambdaHandler, error) {
			got = env
			p, _, _ := env.Setup.Build(h.handle)
			return p.Handle, nil
		})
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if strings.TrimSpace(stdout.String()) != `{"batchItemFailures":[]}` {
		t.Fatalf("stdout %q", stdout.String())
	}
	if _, ok := got.Setup.Checkpoints.(*DynamoCheckpoints); !ok || !got.Local || got.Setup.Name != "team-orders" {
		t.Fatalf("env %+v", got)
	}
	for _, want := range []string{`"msg":"consumer function starting"`, `"checkpoints":"dynamodb"`, `"checkpoint_table":"` + table + `"`,
		`"checkpoint_ttl":"72h0m0s"`, `"dead_letter_queue":"` + url + `"`, `"DeadLetteredRecords"`} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %s:\n%s", want, stderr.String())
		}
	}
	msgs, err := sqslocal.Drain(context.Background(), sc, url)
	if err != nil || len(msgs) != 1 || !strings.Contains(*msgs[0].Body, `"sub_sequence_number":2`) {
		t.Fatalf("dead letters %v %v", msgs, err)
	}
}

func TestWithoutTheStackVariablesMemoryAndSaysSo(t *testing.T) {
	localAWS(t, "http://127.0.0.1:9", "http://127.0.0.1:9")
	t.Setenv(CheckpointTableEnv, "")
	t.Setenv(DeadLetterQueueEnv, "")
	t.Setenv("AWS_LAMBDA_FUNCTION_NAME", "")
	var stdout, stderr bytes.Buffer
	started := false
	err := run(context.Background(), "orders", nil, &stdout, &stderr, func(LambdaHandler) { started = true },
		func(_ context.Context, env Env) (LambdaHandler, error) {
			if _, ok := env.Setup.Checkpoints.(*MemoryCheckpoints); !ok || env.Setup.DeadLetters != nil || env.Local || env.Setup.Name != "orders" {
				t.Errorf("env %+v", env)
			}
			p, _, _ := env.Setup.Build(poisonHandler().handle)
			return p.Handle, nil
		})
	if err != nil || !started {
		t.Fatalf("%v, started %v", err, started)
	}
	for _, want := range []string{`"checkpoints":"memory"`, `"dead_letter_queue":"none"`} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %s:\n%s", want, stderr.String())
		}
	}
	t.Setenv(StreamRetentionEnv, "a week")
	t.Setenv(CheckpointTableEnv, "t")
	if err := run(context.Background(), "orders", nil, &stdout, &stderr, func(LambdaHandler) {},
		func(context.Context, Env) (LambdaHandler, error) { return nil, errors.New("unreachable") }); err == nil ||
		!strings.Contains(err.Error(), StreamRetentionEnv) {
		t.Fatalf("bad retention: %v", err)
	}
}
