package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// minimal is the smallest valid context.
func minimal() map[string]any {
	return map[string]any{
		KeyLookupdHTTP: []any{"lookupd-0:4161", "lookupd-1:4161"},
		KeyTopic:       "locations",
	}
}

func with(base map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range base {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

func parse(t *testing.T, ctx map[string]any) *Config {
	t.Helper()
	c, err := Parse(MapContext(ctx))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func TestParseConfigDefaults(t *testing.T) {
	c := parse(t, minimal())
	checks := []struct {
		name      string
		got, want any
	}{
		{"stack name", c.StackName, "nsqk"},
		{"stream name", c.Stream.Name, "nsqk-locations"},
		{"stream mode", c.Stream.Mode, StreamModeProvisioned},
		{"shards", c.Stream.ShardCount, 2},
		{"retention", c.Stream.RetentionHours, 24},
		{"channel", c.NSQ.Channel, "nsqk-kinesis"},
		{"partition key", c.Bridge.PartitionKey, "user_id"},
		{"key buckets", c.Bridge.KeyBuckets, 1},
		{"max buffered", c.Bridge.MaxBufferedTime, 100 * time.Millisecond},
		{"shutdown", c.Bridge.ShutdownTimeout, 25 * time.Second},
		{"stop timeout", c.Bridge.StopTimeout(), 40 * time.Second},
		{"cpu", c.Bridge.CPU, 512},
		{"memory", c.Bridge.MemoryMiB, 1024},
		{"desired (unset)", c.Bridge.DesiredCount, 0},
		{"min", c.Bridge.MinCount, 1},
		{"max", c.Bridge.MaxCount, 1},
		{"cpu target", c.Bridge.CPUTargetPercent, 60},
		{"vpc created", c.Network.Imported(), false},
		{"vpc cidr", c.Network.Cidr, "10.80.0.0/16"},
		{"azs", c.Network.MaxAZs, 2},
		{"nat", c.Network.NatGateways, 1},
		{"interface endpoints", c.Network.InterfaceEndpoints, true},
		{"reordering not accepted", c.Bridge.AcceptReordering, false},
		{"log retention", c.LogRetentionDays, 30},
		{"removal", c.RemovalPolicy, RemovalRetain},
		{"alarms", c.Alarms, DefaultAlarmThresholds()},
		{"consumers", strings.Join(c.ConsumerNames(), ","), "monitor,lastlocation"},
		{"on-failure destination", c.OnFailure.Destination, OnFailureSQS},
		{"on-failure expiry (queue)", c.OnFailure.ExpiryDays, 0},
		{"archive", c.Archive.Enabled, false},
		{"expiry warning", c.ExpiryWarning(), 18 * time.Hour},
		{"function name", c.FunctionName(ConsumerMonitor), "nsqk-monitor"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	mon, _ := c.Consumer(ConsumerMonitor)
	if mon.StartingPosition != StartLatest || mon.RetryAttempts != 2 || mon.MaxRecordAge != 10*time.Minute || !mon.Enabled {
		t.Errorf("monitor defaults: %+v", mon)
	}
	ll, _ := c.Consumer(ConsumerLastLocation)
	if ll.StartingPosition != StartTrimHorizon || ll.RetryAttempts != 5 || ll.MaxRecordAge != time.Hour ||
		ll.BatchSize != 100 || ll.ParallelizationFactor != 1 || ll.EnhancedFanOut {
		t.Errorf("lastlocation defaults: %+v", ll)
	}
}

// TestParseConfigFromCLIStrings: `cdk synth -c key=value` passes every value as a string.
func TestParseConfigFromCLIStrings(t *testing.T) {
	c := parse(t, map[string]any{
		KeyNsqdTCP:           "nsqd-0:4150, nsqd-1:4150",
		KeyTopic:             "locations",
		KeyStreamMode:        "on-demand",
		KeyRetentionHours:    "48",
		KeyTLS:               "true",
		KeyMaxInFlight:       "500",
		KeyBridgeTaskCount:   "2",
		KeyBridgeMinTasks:    "2",
		KeyBridgeMaxTasks:    "4",
		KeyAlarmEmail:        `["ops@example.com","oncall@example.com"]`,
		KeyConsumers:         `{"lastlocation":{"batchSize":500,"batchingWindow":"2s","parallelizationFactor":4,"enhancedFanOut":true,"maxRecordAge":"2h"}}`,
		KeyAlarms:            `{"bridgeNsqBacklog":50000,"lambdaIteratorAgeMs":120000}`,
		KeyNsqdHTTP:          "nsqd-0:4151,nsqd-1:4151",
		KeyBridgeEnvironment: `{"NSQK_ORDERING":"relaxed","NSQK_MAX_ATTEMPTS":10}`,
	})
	if len(c.NSQ.NsqdHTTPAddresses) != 2 || c.Bridge.ExtraEnv["NSQK_ORDERING"] != "relaxed" || c.Bridge.ExtraEnv["NSQK_MAX_ATTEMPTS"] != "10" {
		t.Errorf("nsqd http / extra env: %v %v", c.NSQ.NsqdHTTPAddresses, c.Bridge.ExtraEnv)
	}
	if got := strings.Join(c.NSQ.NsqdTCPAddresses, "|"); got != "nsqd-0:4150|nsqd-1:4150" {
		t.Errorf("nsqd addresses: %q", got)
	}
	if c.Stream.Mode != StreamModeOnDemand || c.Stream.ShardCount != 0 || c.Stream.RetentionHours != 48 {
		t.Errorf("stream: %+v", c.Stream)
	}
	if !c.NSQ.TLS || c.Bridge.MaxInFlight != 500 || c.Bridge.DesiredCount != 2 || c.Bridge.MaxCount != 4 {
		t.Errorf("bridge/nsq: %+v %+v", c.NSQ, c.Bridge)
	}
	if len(c.AlarmEmails) != 2 {
		t.Errorf("emails: %v", c.AlarmEmails)
	}
	ll, _ := c.Consumer(ConsumerLastLocation)
	if ll.BatchSize != 500 || ll.BatchingWindow != 2*time.Second || ll.ParallelizationFactor != 4 || !ll.EnhancedFanOut || ll.MaxRecordAge != 2*time.Hour {
		t.Errorf("lastlocation: %+v", ll)
	}
	if ll.RetryAttempts != 5 || ll.StartingPosition != StartTrimHorizon {
		t.Errorf("unset consumer fields must keep their defaults: %+v", ll)
	}
	if c.Alarms.BridgeNSQBacklog != 50000 || c.Alarms.LambdaIteratorAgeMs != 120000 || c.Alarms.LambdaErrors != 1 {
		t.Errorf("alarms: %+v", c.Alarms)
	}
}

func TestParseConfigAtTimestamp(t *testing.T) {
	for _, ts := range []string{"2025-01-31T00:00:00Z", "1738281600"} {
		c := parse(t, with(minimal(), KeyConsumers, map[string]any{
			"monitor": map[string]any{"startingPosition": "at_timestamp", "startingPositionTimestamp": ts},
		}))
		mon, _ := c.Consumer(ConsumerMonitor)
		if mon.StartingPosition != StartAtTimestamp || mon.StartingTimestamp.Unix() != 1738281600 {
			t.Errorf("%s: %+v", ts, mon)
		}
	}
}

// TestParseConfigOwnConsumer: a name other than the built-in ones adds a consumer with the
// generic defaults, after the built-in ones, in name order.
func TestParseConfigOwnConsumer(t *testing.T) {
	c := parse(t, with(minimal(), KeyConsumers, `{"zones":{},"geofence":{"batchSize":10,"parallelizationFactor":2}}`))
	if got := strings.Join(c.ConsumerNames(), ","); got != "monitor,lastlocation,geofence,zones" {
		t.Fatalf("consumers: %s", got)
	}
	g, _ := c.Consumer("geofence")
	if g.BatchSize != 10 || g.ParallelizationFactor != 2 || g.StartingPosition != StartTrimHorizon || g.RetryAttempts != 5 ||
		g.MaxRecordAge != time.Hour || g.MemoryMiB != 256 || !g.Enabled {
		t.Errorf("geofence: %+v", g)
	}
	if c.FunctionName("geofence") != "nsqk-geofence" {
		t.Errorf("function name %s", c.FunctionName("geofence"))
	}
}

// TestCheckConsumerSources: every consumer needs its main package; the built-in ones have theirs
// in this repository, a misspelt or unwritten one is named in the error.
func TestCheckConsumerSources(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	if err := CheckConsumerSources(root, parse(t, minimal())); err != nil {
		t.Errorf("built-in consumers: %v", err)
	}
	err := CheckConsumerSources(root, parse(t, with(minimal(), KeyConsumers, map[string]any{"lastlocaton": map[string]any{}})))
	if err == nil || !strings.Contains(err.Error(), `consumer "lastlocaton" has no functions/lastlocaton/main.go`) {
		t.Errorf("misspelt consumer: %v", err)
	}
	own := t.TempDir()
	for _, name := range []string{"monitor", "lastlocation", "geofence"} {
		if err := os.MkdirAll(filepath.Join(own, "functions", name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(own, "functions", name, "main.go"), []byte("package main\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := CheckConsumerSources(own, parse(t, with(minimal(), KeyConsumers, map[string]any{"geofence": nil}))); err != nil {
		t.Errorf("own consumer with its main package: %v", err)
	}
}

func TestParseConfigFailureAndArchive(t *testing.T) {
	c := parse(t, with(minimal(), KeyOnFailure, "s3", KeyArchive, "true", KeyArchiveExpiryDays, "400", KeyRetentionHours, 168))
	if c.OnFailure.Destination != OnFailureS3 || c.OnFailure.ExpiryDays != 90 || !c.Archive.Enabled || c.Archive.ExpiryDays != 400 {
		t.Errorf("%+v %+v", c.OnFailure, c.Archive)
	}
	if c.ExpiryWarning() != 162*time.Hour {
		t.Errorf("expiry warning with 7 days' retention: %s", c.ExpiryWarning())
	}
	// Beyond 14 days the queue forgets the failed batch first.
	if c := parse(t, with(minimal(), KeyRetentionHours, 720)); c.ExpiryWarning() != 14*24*time.Hour-6*time.Hour {
		t.Errorf("expiry warning with 30 days' retention: %s", c.ExpiryWarning())
	}
}

// TestParseConfigOneBridgePerChannel: the default channel is the stack's own, and several bridge
// tasks are accepted only when order does not matter or the user says so.
func TestParseConfigOneBridgePerChannel(t *testing.T) {
	if c := parse(t, with(minimal(), KeyStackName, "fleet-eu")); c.NSQ.Channel != "fleet-eu-kinesis" {
		t.Errorf("default channel of stack fleet-eu: %q", c.NSQ.Channel)
	}
	if c := parse(t, with(minimal(), KeyStackName, "fleet-eu", KeyChannel, "shared")); c.NSQ.Channel != "shared" {
		t.Errorf("explicit channel: %q", c.NSQ.Channel)
	}
	c := parse(t, with(minimal(), KeyBridgeMaxTasks, 4, KeyAcceptReordering, true))
	if !c.Bridge.AcceptReordering || c.Bridge.MaxCount != 4 || c.Bridge.Ordering() != "strict" {
		t.Errorf("accepted reordering: %+v", c.Bridge)
	}
	c = parse(t, with(minimal(), KeyBridgeMaxTasks, "4", KeyBridgeEnvironment, `{"NSQK_ORDERING":"relaxed"}`))
	if c.Bridge.MaxCount != 4 || c.Bridge.Ordering() != "relaxed" {
		t.Errorf("relaxed: %+v", c.Bridge)
	}
}

func TestNSQPorts(t *testing.T) {
	c := parse(t, minimal())
	if got := c.NSQ.Ports(); !slices.Equal(got, []int{4150, 4151, 4161}) {
		t.Errorf("lookupd defaults: %v", got)
	}
	for _, ports := range []any{[]any{14150.0, 14151.0}, []any{"14150", " 14151"}, "14150, 14151", "[14150,14151]"} {
		c = parse(t, with(minimal(), KeyNsqdPorts, ports))
		if got := c.NSQ.Ports(); !slices.Equal(got, []int{4161, 14150, 14151}) {
			t.Errorf("lookupd with nsqdPorts %v: %v", ports, got)
		}
	}
	c = parse(t, with(minimal(), KeyLookupdHTTP, nil, KeyNsqdTCP, "a:4150,b:5150", KeyNsqdHTTP, "a:4151"))
	if got := c.NSQ.Ports(); !slices.Equal(got, []int{4150, 4151, 5150}) {
		t.Errorf("nsqd addresses: %v", got)
	}
}

func TestParseConfigImportedVPC(t *testing.T) {
	c := parse(t, with(minimal(),
		KeyVpcID, "vpc-0123456789abcdef0",
		KeyVpcSubnetIDs, "subnet-0123456789abcdef0,subnet-0123456789abcdef1",
		KeyVpcAZs, []any{"eu-west-1a", "eu-west-1b"}))
	if !c.Network.Imported() || len(c.Network.SubnetIDs) != 2 || len(c.Network.AvailabilityZones) != 2 {
		t.Errorf("network: %+v", c.Network)
	}
}

func TestParseConfigRejects(t *testing.T) {
	consumer := func(name string, kv ...any) map[string]any {
		o := map[string]any{}
		for i := 0; i+1 < len(kv); i += 2 {
			o[kv[i].(string)] = kv[i+1]
		}
		return with(minimal(), KeyConsumers, map[string]any{name: o})
	}
	importVPC := func(kv ...any) map[string]any {
		base := with(minimal(), KeyVpcID, "vpc-0123456789abcdef0", KeyVpcSubnetIDs, "subnet-0123456789abcdef0,subnet-0123456789abcdef1", KeyVpcAZs, "eu-west-1a,eu-west-1b")
		return with(base, kv...)
	}
	cases := []struct {
		name string
		ctx  map[string]any
		want string // substring of the error
	}{
		{"bad capacity mode", with(minimal(), KeyStreamMode, "serverless"), `"serverless" is not a capacity mode`},
		{"shards with on-demand", with(minimal(), KeyStreamMode, "on-demand", KeyShardCount, 4), "only valid with streamMode=provisioned"},
		{"zero shards", with(minimal(), KeyShardCount, 0), "out of range 1..10000"},
		{"fractional shards", with(minimal(), KeyShardCount, 1.5), "whole number"},
		{"retention too short", with(minimal(), KeyRetentionHours, 12), "out of range 24..8760"},
		{"retention too long", with(minimal(), KeyRetentionHours, 9000), "out of range 24..8760"},
		{"no NSQ source", map[string]any{KeyTopic: "t"}, "set the nsqlookupd HTTP addresses"},
		{"both NSQ sources", with(minimal(), KeyNsqdTCP, "nsqd:4150"), "not both"},
		{"bad host:port", with(minimal(), KeyLookupdHTTP, "lookupd"), "not host:port"},
		{"bad port", with(minimal(), KeyLookupdHTTP, "lookupd:99999"), "invalid port"},
		{"no topic", map[string]any{KeyLookupdHTTP: "l:4161"}, "topic to bridge is required"},
		{"bad topic", with(minimal(), KeyTopic, "loc ations"), "not a valid NSQ topic name"},
		{"ephemeral channel", with(minimal(), KeyChannel, "bridge#ephemeral"), "ephemeral"},
		{"dead letter loops", with(minimal(), KeyDeadLetterTopic, "locations"), "must differ"},
		{"partial secret ARN", with(minimal(), KeyAuthSecretArn, "arn:aws:secretsmanager:eu-west-1:123456789012:secret:nsq-auth"), "complete Secrets Manager secret ARN"},
		{"secret key without secret", with(minimal(), KeyAuthSecretKmsKeyArn, "arn:aws:kms:eu-west-1:123456789012:key/abcd"), "only valid together with"},
		{"bad TLS flag", with(minimal(), KeyTLS, "yes please"), "want true or false"},
		{"bad duration", with(minimal(), KeyMaxBufferedTime, "100"), "Go duration"},
		{"numeric duration", with(minimal(), KeyMaxBufferedTime, 100.0), "Go duration"},
		{"shutdown beyond Fargate stop timeout", with(minimal(), KeyShutdownTimeout, "110s"), "out of range 1s..1m45s"},
		{"bad log level", with(minimal(), KeyBridgeLogLevel, "verbose"), "not one of debug"},
		{"fargate cpu", with(minimal(), KeyBridgeCPU, 768), "not a Fargate CPU size"},
		{"fargate memory", with(minimal(), KeyBridgeCPU, 1024, KeyBridgeMemory, 1024), "not valid with 1024 CPU units"},
		{"max below min", with(minimal(), KeyBridgeMinTasks, 3, KeyBridgeMaxTasks, 2), "is below bridgeMinTasks=3"},
		{"desired outside bounds", with(minimal(), KeyBridgeTaskCount, 5), "outside the autoscaling bounds 1..1"},
		{"zero min tasks", with(minimal(), KeyBridgeMinTasks, 0), "out of range 1..100"},
		{"cpu target", with(minimal(), KeyBridgeCPUTarget, 95), "out of range 10..90"},
		{"vpc without subnets", with(minimal(), KeyVpcID, "vpc-0123456789abcdef0", KeyVpcAZs, "eu-west-1a"), "vpcSubnetIds"},
		{"vpc without AZs", with(minimal(), KeyVpcID, "vpc-0123456789abcdef0", KeyVpcSubnetIDs, "subnet-0123456789abcdef0"), "one availability zone per subnet"},
		{"subnets not spread over AZs", importVPC(KeyVpcAZs, "eu-west-1a,eu-west-1b,eu-west-1c"), "do not spread evenly"},
		{"bad vpc id", importVPC(KeyVpcID, "my-vpc"), "is not a VPC id"},
		{"bad subnet id", importVPC(KeyVpcSubnetIDs, "subnet-1,subnet-2"), "is not a subnet id"},
		{"create-only key on import", importVPC(KeyVpcNatGateways, 2), "only valid when the stack creates the VPC"},
		{"subnets without vpc", with(minimal(), KeyVpcSubnetIDs, "subnet-0123456789abcdef0"), "only valid together with \"vpcId\""},
		{"NAT gateways above AZs", with(minimal(), KeyVpcNatGateways, 3), "3 NAT gateways for 2 availability zones"},
		{"no NAT gateway", with(minimal(), KeyVpcNatGateways, 0), "out of range 1..6"},
		{"bad cidr", with(minimal(), KeyVpcCidr, "10.0.0.0/24"), "/16 to /18"},
		{"bad AZ name", with(minimal(), KeyVpcAZs, "west"), "not an availability zone name"},
		{"consumer name with capitals", with(minimal(), KeyConsumers, map[string]any{"GeoFence": map[string]any{}}), `consumer name "GeoFence": use 1-23 lowercase letters`},
		{"consumer name too long", with(minimal(), KeyConsumers, map[string]any{strings.Repeat("g", 24): map[string]any{}}), "use 1-23 lowercase letters"},
		{"the bridge as a consumer", with(minimal(), KeyConsumers, map[string]any{"bridge": map[string]any{}}), "is the bridge program"},
		{"custom consumer checked like the built-in ones", with(minimal(), KeyConsumers, map[string]any{"geofence": map[string]any{"batchSize": 0}}), `context "consumers.geofence": batchSize: 0`},
		{"unknown on-failure destination", with(minimal(), KeyOnFailure, "sns"), `"sns": use "sqs"`},
		{"bucket expiry with the queue destination", with(minimal(), KeyOnFailureExpiryDays, 30), "only valid with onFailureDestination=s3"},
		{"bucket expiry out of range", with(minimal(), KeyOnFailure, "s3", KeyOnFailureExpiryDays, 0), "out of range 1..3650"},
		{"archive expiry without archive", with(minimal(), KeyArchiveExpiryDays, 30), "only valid with archive=true"},
		{"archive not a boolean", with(minimal(), KeyArchive, "on"), `want true or false, got "on"`},
		{"archive expiry negative", with(minimal(), KeyArchive, true, KeyArchiveExpiryDays, -1), "out of range 0..36500"},
		{"unknown consumer field", consumer("monitor", "batchsize", 10), `unknown field "batchsize"`},
		{"consumers not an object", with(minimal(), KeyConsumers, "monitor"), "want a JSON object"},
		{"batch size 0", consumer("monitor", "batchSize", 0), "batchSize: 0 is not a whole number in 1..10000"},
		{"batch size too big", consumer("monitor", "batchSize", 10001), "batchSize: 10001"},
		{"parallelization 0", consumer("lastlocation", "parallelizationFactor", 0), "parallelizationFactor: 0 is not a whole number in 1..10"},
		{"parallelization 11", consumer("lastlocation", "parallelizationFactor", 11), "parallelizationFactor: 11"},
		{"unbounded retries", consumer("lastlocation", "retryAttempts", -1), "retries must be bounded"},
		{"too many retries", consumer("lastlocation", "retryAttempts", 10001), "retryAttempts: 10001"},
		{"batching window too long", consumer("monitor", "batchingWindow", "6m"), "batchingWindow: 6m0s must be whole seconds in 0s..5m"},
		{"batching window fraction", consumer("monitor", "batchingWindow", "1500ms"), "must be whole seconds"},
		{"record age too short", consumer("monitor", "maxRecordAge", "30s"), "maxRecordAge: 30s"},
		{"record age beyond retention", consumer("lastlocation", "maxRecordAge", "48h"), "exceeds the stream retention of 24h"},
		{"timeout too long", consumer("lastlocation", "timeout", "16m"), "timeout: 16m0s"},
		{"memory too small", consumer("lastlocation", "memoryMiB", 64), "memoryMiB: 64"},
		{"bad starting position", consumer("monitor", "startingPosition", "EARLIEST"), `startingPosition "EARLIEST"`},
		{"AT_TIMESTAMP without timestamp", consumer("monitor", "startingPosition", "AT_TIMESTAMP"), "needs startingPositionTimestamp"},
		{"timestamp without AT_TIMESTAMP", consumer("monitor", "startingPositionTimestamp", "2025-01-31T00:00:00Z"), "only valid with startingPosition AT_TIMESTAMP"},
		{"bad timestamp", consumer("monitor", "startingPosition", "AT_TIMESTAMP", "startingPositionTimestamp", "yesterday"), "neither RFC 3339"},
		{"unknown alarm key", with(minimal(), KeyAlarms, map[string]any{"nsqBacklog": 5}), `unknown field "nsqBacklog"`},
		{"non-positive threshold", with(minimal(), KeyAlarms, map[string]any{"lambdaErrors": 0}), "must be a positive number"},
		{"bad email", with(minimal(), KeyAlarmEmail, "ops at example.com"), "not a plain e-mail address"},
		{"bad log retention", with(minimal(), KeyLogRetentionDays, 10), "not a CloudWatch Logs retention"},
		{"bad removal policy", with(minimal(), KeyRemovalPolicy, "snapshot"), `"snapshot": use "retain"`},
		{"stack name too long", with(minimal(), KeyStackName, strings.Repeat("n", 41)), "at most 40 characters"},
		{"stack name charset", with(minimal(), KeyStackName, "nsqk_prod"), "must start with a letter"},
		{"bad account", with(minimal(), KeyAccount, "1234"), "12-digit"},
		{"bad region", with(minimal(), KeyRegion, "Europe"), "AWS region name"},
		{"nsqd HTTP without nsqd TCP", with(minimal(), KeyNsqdHTTP, "nsqd:4151"), "only valid with \"nsqdTcpAddresses\""},
		{"extra env not NSQK", with(minimal(), KeyBridgeEnvironment, map[string]any{"AWS_REGION": "x"}), "only NSQK_* variables"},
		{"extra env managed", with(minimal(), KeyBridgeEnvironment, map[string]any{"NSQK_TOPIC": "x"}), "NSQK_TOPIC is managed by the stack: set nsqTopic instead"},
		{"extra env secret", with(minimal(), KeyBridgeEnvironment, `{"NSQK_AUTH_SECRET":"hunter2"}`), "set nsqAuthSecretArn instead"},
		{"extra env object value", with(minimal(), KeyBridgeEnvironment, map[string]any{"NSQK_ORDERING": []any{"x"}}), "want a string, number or boolean"},
		{"string for a number", with(minimal(), KeyShardCount, "four"), `want a whole number, got "four"`},
		{"several tasks with strict order", with(minimal(), KeyBridgeMaxTasks, 2), "2 tasks with strict ordering"},
		{"several tasks with explicit strict order", with(minimal(), KeyBridgeMaxTasks, 3, KeyBridgeEnvironment, map[string]any{"NSQK_ORDERING": "strict"}), "set acceptKeyReordering=true"},
		{"nsqd ports with nsqd addresses", with(minimal(), KeyLookupdHTTP, nil, KeyNsqdTCP, "nsqd:4150", KeyNsqdPorts, "4150"), "only valid with \"nsqLookupdHttpAddresses\""},
		{"bad nsqd port", with(minimal(), KeyNsqdPorts, "4150,http"), `want a whole number, got "http"`},
		{"nsqd port out of range", with(minimal(), KeyNsqdPorts, []any{4150.0, 70000.0}), "70000 is not a TCP port"},
		{"empty nsqd ports", with(minimal(), KeyNsqdPorts, []any{}), "name the nsqd TCP and HTTP ports"},
		{"interface endpoints on an imported VPC", importVPC(KeyVpcEndpoints, false), "only valid when the stack creates the VPC"},
		{"boolean for a number", with(minimal(), KeyShardCount, true), "want a whole number, got bool (true)"},
		{"number in a list", with(minimal(), KeyLookupdHTTP, []any{"l:4161", 4161.0}), "want a list of strings, found float64 (4161)"},
		{"bad JSON text", with(minimal(), KeyConsumers, `{"monitor":`), "want a JSON object: unexpected end of JSON input"},
		{"numeric consumer duration", consumer("monitor", "timeout", 30.0), `timeout: want a Go duration string such as "30s"`},
		{"misspelt consumer field", consumer("monitor", "BatchSize", 10), `unknown field "BatchSize"`},
		{"ill-typed extra env", with(minimal(), KeyBridgeEnvironment, map[string]any{"NSQK_ORDERING": map[string]any{}}), "NSQK_ORDERING: want a string, number or boolean"},
		{"threshold not a number", with(minimal(), KeyAlarms, map[string]any{"lambdaErrors": "many"}), `want a number, got "many"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(MapContext(tc.ctx))
			if err == nil {
				t.Fatalf("want an error containing %q, got none", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error containing %q, got:\n%v", tc.want, err)
			}
		})
	}
}

// TestParseConfigReportsEveryProblem: one run lists all mistakes, each naming its key.
func TestParseConfigReportsEveryProblem(t *testing.T) {
	_, err := Parse(MapContext(map[string]any{
		KeyStreamMode:     "fast",
		KeyRetentionHours: 1,
		KeyTopic:          "t",
	}))
	if err == nil {
		t.Fatal("want errors")
	}
	for _, key := range []string{KeyStreamMode, KeyRetentionHours, KeyLookupdHTTP} {
		if !strings.Contains(err.Error(), `context "`+key+`"`) {
			t.Errorf("error does not mention %q:\n%v", key, err)
		}
	}
}

// TestParseConfigReportsEveryProblemOfAConsumer: within one "consumers" entry too, every wrong
// field is named at once (an unknown one beside ill-typed ones).
func TestParseConfigReportsEveryProblemOfAConsumer(t *testing.T) {
	_, err := Parse(MapContext(with(minimal(), KeyConsumers, map[string]any{
		"lastlocation": map[string]any{"batchSize": "many", "timeout": 5.0, "retries": 3},
	})))
	if err == nil {
		t.Fatal("want errors")
	}
	for _, w := range []string{`batchSize: want a whole number, got "many"`, "timeout: want a Go duration", `unknown field "retries"`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not say %q:\n%v", w, err)
		}
	}
}

func TestCheckUnknownKeys(t *testing.T) {
	ok := map[string]any{
		KeyStreamName: "s", "@aws-cdk/core:target-partitions": []any{"aws"}, "cli-telemetry": false,
		"aws:cdk:enable-path-metadata": true, "availability-zones:account=1:region=eu-west-1": []any{},
	}
	if err := CheckUnknownKeys(ok); err != nil {
		t.Errorf("unexpected: %v", err)
	}
	err := CheckUnknownKeys(with(ok, "streamNmae", "typo"))
	if err == nil || !strings.Contains(err.Error(), `"streamNmae": unknown key`) {
		t.Errorf("typo not reported: %v", err)
	}
}

func TestStopTimeoutExceedsShutdownTimeout(t *testing.T) {
	for _, d := range []time.Duration{time.Second, 25 * time.Second, 60 * time.Second, 105 * time.Second} {
		b := BridgeConfig{ShutdownTimeout: d}
		if st := b.StopTimeout(); st <= d || st > 120*time.Second {
			t.Errorf("shutdown %s: stop timeout %s", d, st)
		}
	}
}

// TestCdkJSON: the committed cdk.json is valid, synthesizes with the pinned CLI settings the
// design notes ask for, and its context parses.
func TestCdkJSON(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "cdk.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc["app"] != "go run ./infra" {
		t.Errorf("app: %v", doc["app"])
	}
	if doc["notices"] != false {
		t.Errorf("notices must be false, got %v", doc["notices"])
	}
	ctx := doc["context"].(map[string]any)
	if ctx["cli-telemetry"] != false {
		t.Errorf("context cli-telemetry must be false, got %v", ctx["cli-telemetry"])
	}
	if err := CheckUnknownKeys(ctx); err != nil {
		t.Error(err)
	}
	if _, err := Load(ctx); err != nil {
		t.Errorf("cdk.json context: %v", err)
	}
}
