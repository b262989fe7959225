package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/localtest"
	"github.com/nsqk/nsqk/shared/logread"
)

// localAWS points the SDK's standard chain at a local endpoint, with nothing from the user's
// own configuration files.
func localAWS(t *testing.T, endpoint string) {
	t.Setenv("AWS_ENDPOINT_URL_KINESIS", endpoint)
	t.Setenv("AWS_REGION", kinesislocal.Region)
	t.Setenv("AWS_ACCESS_KEY_ID", "local")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "local")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

func TestTailCommandJSONContract(t *testing.T) {
	e := localtest.Kinesis(t, kinesislocal.Options{})
	kc := e.Client()
	stream := localtest.Stream(t, kc, 2)
	agg := kpl.NewAggregator(kpl.AggregatorConfig{OuterPartitionKey: "outer"})
	agg.Add("u1", "", []byte(`{"user_id":"u1","seq":1}`))
	agg.Add("u2", "123", []byte{0xff, 0x00})
	rec := agg.Flush(nil)
	ctx := context.Background()
	if _, err := kc.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String(stream), PartitionKey: aws.String(rec.PartitionKey), Data: rec.Data}); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String(stream), PartitionKey: aws.String("u1"), Data: []byte("plain")}); err != nil {
		t.Fatal(err)
	}
	localAWS(t, e.Endpoint)
	kcEnv, err := kinesisClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	sel := selection{stream: stream}
	o, err := sel.options(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := runTail(ctx, kcEnv, o, logread.AppendJSON, &out, &errOut, false); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), out.String())
	}
	fields := []string{"aggregated", "arrival_time", "data", "data_base64", "explicit_hash_key", "partition_key", "sequence_number", "shard_id", "sub_sequence_number"}
	byData := map[string]map[string]any{}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		var keys []string
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		d, _ := base64.StdEncoding.DecodeString(m["data_base64"].(string))
		want := fields
		if string(d) == "\xff\x00" {
			want = slices.DeleteFunc(slices.Clone(fields), func(s string) bool { return s == "data" })
		}
		if !slices.Equal(keys, want) {
			t.Errorf("fields %v, want %v", keys, want)
		}
		if _, err := time.Parse(time.RFC3339, m["arrival_time"].(string)); err != nil || len(m["arrival_time"].(string)) != len("2006-01-02T15:04:05.000Z") {
			t.Errorf("arrival_time %q", m["arrival_time"])
		}
		byData[string(d)] = m
	}
	if m := byData[`{"user_id":"u1","seq":1}`]; m["partition_key"] != "u1" || m["aggregated"] != true || m["sub_sequence_number"] != 0.0 || m["explicit_hash_key"] != nil || m["data"] != `{"user_id":"u1","seq":1}` {
		t.Errorf("first user record: %v", m)
	}
	if m := byData["\xff\x00"]; m["partition_key"] != "u2" || m["sub_sequence_number"] != 1.0 || m["explicit_hash_key"] != "123" {
		t.Errorf("second user record: %v", m)
	}
	if m := byData["plain"]; m["partition_key"] != "u1" || m["aggregated"] != false || m["sub_sequence_number"] != 0.0 {
		t.Errorf("plain record: %v", m)
	}
	if errOut.Len() != 0 {
		t.Errorf("stderr: %s", errOut.String())
	}

	out.Reset()
	if _, err := runTail(ctx, kcEnv, o, logread.AppendData, &out, &errOut, false); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "\n"); n != 3 || !strings.Contains(out.String(), "plain\n") {
		t.Errorf("--format data: %q", out.String())
	}
}

func TestTailErrorsAreClear(t *testing.T) {
	e := localtest.Kinesis(t, kinesislocal.Options{})
	localAWS(t, e.Endpoint)
	ctx := context.Background()
	kc, err := kinesisClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = runTail(ctx, kc, logread.Options{Stream: "missing"}, logread.AppendJSON, &bytes.Buffer{}, &bytes.Buffer{}, false)
	if err == nil || !strings.Contains(err.Error(), "stream not found: missing") || !strings.Contains(err.Error(), "AWS_ENDPOINT_URL_KINESIS") {
		t.Errorf("unknown stream: %v", err)
	}

	os.Unsetenv("AWS_ACCESS_KEY_ID")
	os.Unsetenv("AWS_SECRET_ACCESS_KEY")
	_, err = kinesisClient(ctx)
	if err == nil || !strings.Contains(err.Error(), "no AWS credentials") {
		t.Errorf("no credentials: %v", err)
	}

	for _, bad := range []selection{{stream: "s", from: "yesterday"}, {stream: "s", to: "soon"}, {from: "latest"},
		{stream: "s", from: "2026-01-02T00:00:00Z", to: "2026-01-01T00:00:00Z"}} {
		if _, err := bad.options(time.Now()); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if code := run(ctx, []string{"tail", "--stream", "s", "--format", "xml"}); code != 1 {
		t.Errorf("--format xml: exit %d", code)
	}
}
