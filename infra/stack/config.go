// Package stack holds the nsqk CDK stack, its constructs and its typed configuration.
//
// Configuration comes from CDK context (cdk.json or `cdk synth -c key=value`). ParseConfig turns
// the raw context values into a validated Config; it is plain Go (no jsii), so it is cheap to test.
package stack

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Consumer function names. The Lambda code for each lives in dist/<name>/bootstrap (built by `make lambda`).
const (
	ConsumerMonitor      = "monitor"
	ConsumerLastLocation = "lastlocation"
)

// ConsumerNames lists the Lambda consumers in a fixed order (template order, dashboard order).
var ConsumerNames = []string{ConsumerMonitor, ConsumerLastLocation}

// Stream capacity modes accepted in context key streamMode.
const (
	StreamModeProvisioned = "provisioned"
	StreamModeOnDemand    = "on-demand"
)

// Starting positions accepted for a consumer's event source mapping.
const (
	StartLatest      = "LATEST"
	StartTrimHorizon = "TRIM_HORIZON"
	StartAtTimestamp = "AT_TIMESTAMP"
)

// Removal policies accepted in context key removalPolicy.
const (
	RemovalRetain  = "retain"
	RemovalDestroy = "destroy"
)

// Config is the whole, validated configuration of one nsqk deployment.
type Config struct {
	StackName string
	Account   string // optional; empty = environment-agnostic stack
	Region    string // optional

	Stream    StreamConfig
	NSQ       NSQConfig
	Bridge    BridgeConfig
	Network   NetworkConfig
	Consumers []ConsumerConfig // one per name in ConsumerNames, same order
	Alarms    AlarmThresholds

	AlarmEmails      []string
	LogRetentionDays int
	RemovalPolicy    string // RemovalRetain or RemovalDestroy
}

// StreamConfig describes the Kinesis data stream.
type StreamConfig struct {
	Name           string
	Mode           string // StreamModeProvisioned or StreamModeOnDemand
	ShardCount     int    // provisioned only
	RetentionHours int
}

// NSQConfig says where the bridge reads from.
type NSQConfig struct {
	LookupdHTTPAddresses []string // exactly one of these two lists is set
	NsqdTCPAddresses     []string
	NsqdHTTPAddresses    []string // optional with NsqdTCPAddresses: polled for the NSQBacklog gauge
	Topic                string
	Channel              string
	DeadLetterTopic      string // optional
	AuthSecretArn        string // optional: complete Secrets Manager ARN of the NSQ auth secret
	AuthSecretKmsKeyArn  string // optional: the CMK that encrypts that secret (grants kms:Decrypt)
	TLS                  bool
}

// BridgeConfig is the Fargate service running functions/bridge.
type BridgeConfig struct {
	PartitionKey     string
	KeyBuckets       int
	MaxBufferedTime  time.Duration
	MaxInFlight      int // 0 = the bridge's own default
	LogLevel         string
	ShutdownTimeout  time.Duration
	CPU              int // Fargate CPU units
	MemoryMiB        int
	DesiredCount     int // 0 = not set: CloudFormation keeps the current count on updates (autoscaling owns it)
	MinCount         int
	MaxCount         int
	CPUTargetPercent int
	ExtraEnv         map[string]string // further NSQK_* settings of the bridge (e.g. NSQK_ORDERING)
}

// StopTimeout is the container stop timeout: the bridge's own shutdown budget plus a margin for
// the final PutRecords and the log driver, capped at Fargate's maximum of 120 s.
func (b BridgeConfig) StopTimeout() time.Duration {
	return min(b.ShutdownTimeout+stopTimeoutMargin, maxFargateStopTimeout)
}

const (
	stopTimeoutMargin     = 15 * time.Second
	maxFargateStopTimeout = 120 * time.Second
)

// NetworkConfig chooses between importing a VPC (VpcID set) and creating one.
type NetworkConfig struct {
	VpcID             string   // import when set
	SubnetIDs         []string // private subnets (with a route to NSQ and AWS APIs) for the bridge
	AvailabilityZones []string // import: the subnets' AZs; create: optional explicit AZs
	Cidr              string   // create only
	MaxAZs            int      // create only
	NatGateways       int      // create only
}

// Imported reports whether an existing VPC is used.
func (n NetworkConfig) Imported() bool { return n.VpcID != "" }

// ConsumerConfig is one Lambda consumer and its event source mapping.
type ConsumerConfig struct {
	Name                  string
	Enabled               bool
	BatchSize             int
	BatchingWindow        time.Duration
	ParallelizationFactor int
	RetryAttempts         int
	MaxRecordAge          time.Duration
	StartingPosition      string
	StartingTimestamp     time.Time // AT_TIMESTAMP only
	EnhancedFanOut        bool
	MemoryMiB             int
	Timeout               time.Duration
}

// AlarmThresholds holds every alarm threshold (see README.md, Deploying on AWS, for the reasoning behind each default).
type AlarmThresholds struct {
	StreamWriteThrottledRecords float64 `json:"streamWriteThrottledRecords"` // records/min throttled, 3 of 5 min
	StreamIteratorAgeMs         float64 `json:"streamIteratorAgeMs"`         // GetRecords.IteratorAgeMilliseconds max, 3 of 5 min
	PutRecordsFailedEntries     float64 `json:"putRecordsFailedEntries"`     // bridge failed entries/min, 3 of 5 min
	LambdaErrors                float64 `json:"lambdaErrors"`                // per consumer, sum over 5 min
	LambdaThrottles             float64 `json:"lambdaThrottles"`             // per consumer, per min, 3 of 5 min
	LambdaIteratorAgeMs         float64 `json:"lambdaIteratorAgeMs"`         // per consumer, max, 3 of 5 min
	DLQMessagesVisible          float64 `json:"dlqMessagesVisible"`          // per consumer DLQ, max over 5 min
	BridgeTasksBelowDesired     float64 `json:"bridgeTasksBelowDesired"`     // desired-running, 5 of 5 min
	BridgeDeadLettered          float64 `json:"bridgeDeadLettered"`          // sum over 5 min
	BridgeAckLatencyP99Ms       float64 `json:"bridgeAckLatencyP99Ms"`       // p99 per min, 3 of 5 min
	BridgeNSQBacklog            float64 `json:"bridgeNsqBacklog"`            // max per min, 5 of 5 min
	MonitorOrderViolations      float64 `json:"monitorOrderViolations"`      // sum over 5 min
}

// DefaultAlarmThresholds are the thresholds used for every key not set in context "alarms".
func DefaultAlarmThresholds() AlarmThresholds {
	return AlarmThresholds{
		StreamWriteThrottledRecords: 1,
		StreamIteratorAgeMs:         60_000,
		PutRecordsFailedEntries:     1,
		LambdaErrors:                1,
		LambdaThrottles:             1,
		LambdaIteratorAgeMs:         60_000,
		DLQMessagesVisible:          1,
		BridgeTasksBelowDesired:     1,
		BridgeDeadLettered:          1,
		BridgeAckLatencyP99Ms:       5_000,
		BridgeNSQBacklog:            10_000,
		MonitorOrderViolations:      1,
	}
}

// defaultConsumer returns the defaults for a consumer. The monitor is a health signal that only
// cares about now (LATEST, few retries); lastlocation is the business consumer and must not miss
// records of a fresh stream (TRIM_HORIZON, more retries before a batch goes to the DLQ).
func defaultConsumer(name string) ConsumerConfig {
	c := ConsumerConfig{
		Name:                  name,
		Enabled:               true,
		BatchSize:             100,
		BatchingWindow:        0,
		ParallelizationFactor: 1,
		RetryAttempts:         5,
		MaxRecordAge:          time.Hour,
		StartingPosition:      StartTrimHorizon,
		MemoryMiB:             256,
		Timeout:               60 * time.Second,
	}
	if name == ConsumerMonitor {
		c.StartingPosition = StartLatest
		c.RetryAttempts = 2
		c.MaxRecordAge = 10 * time.Minute
		c.MemoryMiB = 128
		c.Timeout = 30 * time.Second
	}
	return c
}

// Context keys. Everything the stack reads from CDK context is listed here (and in README.md).
const (
	KeyStackName           = "stackName"
	KeyAccount             = "account"
	KeyRegion              = "region"
	KeyStreamName          = "streamName"
	KeyStreamMode          = "streamMode"
	KeyShardCount          = "shardCount"
	KeyRetentionHours      = "retentionHours"
	KeyLookupdHTTP         = "nsqLookupdHttpAddresses"
	KeyNsqdTCP             = "nsqdTcpAddresses"
	KeyNsqdHTTP            = "nsqdHttpAddresses"
	KeyTopic               = "nsqTopic"
	KeyChannel             = "nsqChannel"
	KeyDeadLetterTopic     = "nsqDeadLetterTopic"
	KeyAuthSecretArn       = "nsqAuthSecretArn"
	KeyAuthSecretKmsKeyArn = "nsqAuthSecretKmsKeyArn"
	KeyTLS                 = "nsqTls"
	KeyPartitionKey        = "partitionKey"
	KeyKeyBuckets          = "keyBuckets"
	KeyMaxBufferedTime     = "maxBufferedTime"
	KeyMaxInFlight         = "maxInFlight"
	KeyBridgeLogLevel      = "bridgeLogLevel"
	KeyShutdownTimeout     = "shutdownTimeout"
	KeyBridgeCPU           = "bridgeCpu"
	KeyBridgeMemory        = "bridgeMemoryMiB"
	KeyBridgeTaskCount     = "bridgeTaskCount"
	KeyBridgeMinTasks      = "bridgeMinTasks"
	KeyBridgeMaxTasks      = "bridgeMaxTasks"
	KeyBridgeCPUTarget     = "bridgeCpuTargetPercent"
	KeyBridgeEnvironment   = "bridgeEnvironment"
	KeyVpcID               = "vpcId"
	KeyVpcSubnetIDs        = "vpcSubnetIds"
	KeyVpcAZs              = "vpcAvailabilityZones"
	KeyVpcCidr             = "vpcCidr"
	KeyVpcMaxAZs           = "vpcMaxAzs"
	KeyVpcNatGateways      = "vpcNatGateways"
	KeyConsumers           = "consumers"
	KeyAlarms              = "alarms"
	KeyAlarmEmail          = "alarmEmail"
	KeyLogRetentionDays    = "logRetentionDays"
	KeyRemovalPolicy       = "removalPolicy"
	KeyLambdaDistDir       = "lambdaDistDir" // read by the app entry only (infra/main.go)
)

// KnownKeys are all context keys this app reads. Plain camelCase keys outside this list are
// reported as errors (a typo in -c would otherwise be silently ignored).
var KnownKeys = []string{
	KeyStackName, KeyAccount, KeyRegion, KeyStreamName, KeyStreamMode, KeyShardCount, KeyRetentionHours,
	KeyLookupdHTTP, KeyNsqdTCP, KeyNsqdHTTP, KeyTopic, KeyChannel, KeyDeadLetterTopic, KeyAuthSecretArn,
	KeyAuthSecretKmsKeyArn, KeyTLS, KeyPartitionKey, KeyKeyBuckets, KeyMaxBufferedTime, KeyMaxInFlight,
	KeyBridgeLogLevel, KeyShutdownTimeout, KeyBridgeCPU, KeyBridgeMemory, KeyBridgeTaskCount,
	KeyBridgeMinTasks, KeyBridgeMaxTasks, KeyBridgeCPUTarget, KeyBridgeEnvironment, KeyVpcID, KeyVpcSubnetIDs, KeyVpcAZs,
	KeyVpcCidr, KeyVpcMaxAZs, KeyVpcNatGateways, KeyConsumers, KeyAlarms, KeyAlarmEmail,
	KeyLogRetentionDays, KeyRemovalPolicy, KeyLambdaDistDir,
}

// plainKey matches the shape of this app's keys; CDK's own keys contain ':', '@' or '-'.
var plainKey = regexp.MustCompile(`^[a-z][A-Za-z0-9]*$`)

var (
	reStackName   = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]{0,39}$`)
	reStreamName  = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,128}$`)
	reNSQName     = regexp.MustCompile(`^[.a-zA-Z0-9_-]{1,64}$`)
	reAccount     = regexp.MustCompile(`^\d{12}$`)
	reRegion      = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d$`)
	reVpcID       = regexp.MustCompile(`^vpc-[0-9a-f]{8,17}$`)
	reSubnetID    = regexp.MustCompile(`^subnet-[0-9a-f]{8,17}$`)
	reAZ          = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d[a-z]$`)
	reSecretArn   = regexp.MustCompile(`^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$`)
	reKmsKeyArn   = regexp.MustCompile(`^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+$`)
	rePartitionKp = regexp.MustCompile(`^\S+$`)
)

// validRetentionDays are the values CloudWatch Logs accepts.
var validRetentionDays = []int{1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}

// fargateMemory lists the memory sizes (MiB) Fargate accepts for each CPU value.
func fargateMemory(cpu int) []int {
	span := func(lo, hi int) []int {
		var out []int
		for m := lo; m <= hi; m += 1024 {
			out = append(out, m)
		}
		return out
	}
	switch cpu {
	case 256:
		return []int{512, 1024, 2048}
	case 512:
		return span(1024, 4096)
	case 1024:
		return span(2048, 8192)
	case 2048:
		return span(4096, 16384)
	case 4096:
		return span(8192, 30720)
	}
	return nil
}

// ContextFunc returns the raw context value for a key, or nil when it is not set.
type ContextFunc func(key string) any

// MapContext adapts a plain map (e.g. in tests) to a ContextFunc.
func MapContext(m map[string]any) ContextFunc {
	return func(k string) any { return m[k] }
}

// parser collects every problem instead of stopping at the first one.
type parser struct {
	get  ContextFunc
	errs []error
}

func (p *parser) fail(key, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("context %q: %s", key, fmt.Sprintf(format, args...)))
}

func (p *parser) has(key string) bool {
	v := p.get(key)
	if v == nil {
		return false
	}
	if s, ok := v.(string); ok && strings.TrimSpace(s) == "" {
		return false
	}
	return true
}

func (p *parser) str(key, def string) string {
	v := p.get(key)
	switch t := v.(type) {
	case nil:
		return def
	case string:
		if s := strings.TrimSpace(t); s != "" {
			return s
		}
		return def
	default:
		p.fail(key, "want a string, got %T (%v)", v, v)
		return def
	}
}

func (p *parser) integer(key string, def, lo, hi int) int {
	v := p.get(key)
	n, err := toInt(v)
	switch {
	case v == nil:
		return def
	case err != nil:
		p.fail(key, "%v", err)
		return def
	case n < lo || n > hi:
		p.fail(key, "%d is out of range %d..%d", n, lo, hi)
		return def
	}
	return n
}

func (p *parser) boolean(key string, def bool) bool {
	v := p.get(key)
	if v == nil {
		return def
	}
	b, err := toBool(v)
	if err != nil {
		p.fail(key, "%v", err)
		return def
	}
	return b
}

func (p *parser) duration(key string, def, lo, hi time.Duration) time.Duration {
	v := p.get(key)
	if v == nil {
		return def
	}
	d, err := toDuration(v)
	if err != nil {
		p.fail(key, "%v", err)
		return def
	}
	if d < lo || d > hi {
		p.fail(key, "%s is out of range %s..%s", d, lo, hi)
		return def
	}
	return d
}

func (p *parser) list(key string) []string {
	v := p.get(key)
	l, err := toList(v)
	if err != nil {
		p.fail(key, "%v", err)
	}
	return l
}

func toInt(v any) (int, error) {
	switch t := v.(type) {
	case nil:
		return 0, nil
	case float64:
		if t != float64(int(t)) {
			return 0, fmt.Errorf("want a whole number, got %v", t)
		}
		return int(t), nil
	case int:
		return t, nil
	case json.Number:
		return toInt(string(t))
	case string:
		n, err := strconv.Atoi(strings.TrimSpace(t))
		if err != nil {
			return 0, fmt.Errorf("want a whole number, got %q", t)
		}
		return n, nil
	}
	return 0, fmt.Errorf("want a whole number, got %T (%v)", v, v)
}

func toBool(v any) (bool, error) {
	switch t := v.(type) {
	case bool:
		return t, nil
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(t))
		if err != nil {
			return false, fmt.Errorf("want true or false, got %q", t)
		}
		return b, nil
	}
	return false, fmt.Errorf("want true or false, got %T (%v)", v, v)
}

func toDuration(v any) (time.Duration, error) {
	s, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("want a Go duration string such as \"30s\" or \"1h\", got %T (%v)", v, v)
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("want a Go duration string such as \"30s\" or \"1h\", got %q", s)
	}
	return d, nil
}

// toList accepts a JSON array of strings (cdk.json), or a comma-separated string (-c key=a,b),
// or a string holding a JSON array (-c 'key=["a","b"]').
func toList(v any) ([]string, error) {
	var raw []string
	switch t := v.(type) {
	case nil:
		return nil, nil
	case string:
		s := strings.TrimSpace(t)
		if strings.HasPrefix(s, "[") {
			if err := json.Unmarshal([]byte(s), &raw); err != nil {
				return nil, fmt.Errorf("want a JSON array of strings or a comma-separated list: %v", err)
			}
		} else {
			raw = strings.Split(s, ",")
		}
	case []any:
		for _, e := range t {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("want a list of strings, found %T (%v)", e, e)
			}
			raw = append(raw, s)
		}
	case []string:
		raw = t
	default:
		return nil, fmt.Errorf("want a list of strings or a comma-separated string, got %T", v)
	}
	var out []string
	for _, s := range raw {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

// toObject accepts a JSON object (cdk.json) or a string holding one (-c 'key={"a":1}') and
// re-encodes it so it can be decoded strictly into a struct.
func toObject(v any) ([]byte, error) {
	switch t := v.(type) {
	case nil:
		return nil, nil
	case string:
		s := strings.TrimSpace(t)
		if s == "" {
			return nil, nil
		}
		if !strings.HasPrefix(s, "{") {
			return nil, fmt.Errorf("want a JSON object, got %q", s)
		}
		return []byte(s), nil
	case map[string]any:
		return json.Marshal(t)
	}
	return nil, fmt.Errorf("want a JSON object, got %T", v)
}

// decodeStrict decodes a JSON object into a struct, rejecting unknown keys. Go's decoder matches
// keys case-insensitively, so the exact spelling is checked against the json tags first.
func decodeStrict(b []byte, into any) error {
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		return err
	}
	known := map[string]bool{}
	rt := reflect.TypeOf(into).Elem()
	for i := 0; i < rt.NumField(); i++ {
		if tag, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ","); tag != "" && tag != "-" {
			known[tag] = true
		}
	}
	var unknown []string
	for k := range keys {
		if !known[k] {
			unknown = append(unknown, strconv.Quote(k))
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("unknown field %s", strings.Join(unknown, ", "))
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(into); err != nil {
		return err
	}
	return nil
}

func validHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", s, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q has an invalid port", s)
	}
	return nil
}

// ParseConfig reads and validates every context key. The error lists every problem found.
func ParseConfig(get ContextFunc) (*Config, error) {
	p := &parser{get: get}
	c := &Config{}

	c.StackName = p.str(KeyStackName, "nsqk")
	if !reStackName.MatchString(c.StackName) {
		p.fail(KeyStackName, "%q must start with a letter, contain only letters, digits and '-', and be at most 40 characters (function, alarm and dashboard names are derived from it)", c.StackName)
	}
	c.Account = p.str(KeyAccount, "")
	if c.Account != "" && !reAccount.MatchString(c.Account) {
		p.fail(KeyAccount, "%q is not a 12-digit AWS account id", c.Account)
	}
	c.Region = p.str(KeyRegion, "")
	if c.Region != "" && !reRegion.MatchString(c.Region) {
		p.fail(KeyRegion, "%q is not an AWS region name such as eu-west-1", c.Region)
	}

	parseStream(p, c)
	parseNSQ(p, c)
	parseBridge(p, c)
	parseNetwork(p, c)
	c.Consumers = parseConsumers(p, c.Stream.RetentionHours)
	parseOps(p, c)

	if len(p.errs) > 0 {
		return nil, fmt.Errorf("invalid nsqk configuration:\n%w", errors.Join(p.errs...))
	}
	return c, nil
}

// parseStream reads the context keys of the Kinesis stream.
func parseStream(p *parser, c *Config) {
	c.Stream.Name = p.str(KeyStreamName, "nsqk-locations")
	if !reStreamName.MatchString(c.Stream.Name) {
		p.fail(KeyStreamName, "%q must be 1-128 characters of letters, digits, '_', '.' and '-'", c.Stream.Name)
	}
	c.Stream.Mode = p.str(KeyStreamMode, StreamModeProvisioned)
	switch c.Stream.Mode {
	case StreamModeProvisioned:
		c.Stream.ShardCount = p.integer(KeyShardCount, 2, 1, 10_000)
	case StreamModeOnDemand:
		if p.has(KeyShardCount) {
			p.fail(KeyShardCount, "only valid with streamMode=%s (on-demand streams size themselves)", StreamModeProvisioned)
		}
	default:
		p.fail(KeyStreamMode, "%q is not a capacity mode: use %q (with shardCount) or %q", c.Stream.Mode, StreamModeProvisioned, StreamModeOnDemand)
	}
	c.Stream.RetentionHours = p.integer(KeyRetentionHours, 24, 24, 8760)
}

// parseNSQ reads the context keys of where the bridge reads from.
func parseNSQ(p *parser, c *Config) {
	c.NSQ.LookupdHTTPAddresses = p.list(KeyLookupdHTTP)
	c.NSQ.NsqdTCPAddresses = p.list(KeyNsqdTCP)
	switch {
	case len(c.NSQ.LookupdHTTPAddresses) == 0 && len(c.NSQ.NsqdTCPAddresses) == 0:
		p.fail(KeyLookupdHTTP, "set the nsqlookupd HTTP addresses (host:port, comma-separated) or %q", KeyNsqdTCP)
	case len(c.NSQ.LookupdHTTPAddresses) > 0 && len(c.NSQ.NsqdTCPAddresses) > 0:
		p.fail(KeyNsqdTCP, "set either %q or %q, not both", KeyLookupdHTTP, KeyNsqdTCP)
	}
	for _, a := range c.NSQ.LookupdHTTPAddresses {
		if err := validHostPort(a); err != nil {
			p.fail(KeyLookupdHTTP, "%v", err)
		}
	}
	for _, a := range c.NSQ.NsqdTCPAddresses {
		if err := validHostPort(a); err != nil {
			p.fail(KeyNsqdTCP, "%v", err)
		}
	}
	c.NSQ.NsqdHTTPAddresses = p.list(KeyNsqdHTTP)
	if len(c.NSQ.NsqdHTTPAddresses) > 0 && len(c.NSQ.NsqdTCPAddresses) == 0 {
		p.fail(KeyNsqdHTTP, "only valid with %q (with lookupd the bridge finds the nsqd HTTP addresses itself)", KeyNsqdTCP)
	}
	for _, a := range c.NSQ.NsqdHTTPAddresses {
		if err := validHostPort(a); err != nil {
			p.fail(KeyNsqdHTTP, "%v", err)
		}
	}
	c.NSQ.Topic = p.str(KeyTopic, "")
	if c.NSQ.Topic == "" {
		p.fail(KeyTopic, "the NSQ topic to bridge is required")
	} else if !reNSQName.MatchString(strings.TrimSuffix(c.NSQ.Topic, "#ephemeral")) {
		p.fail(KeyTopic, "%q is not a valid NSQ topic name (1-64 of [.a-zA-Z0-9_-])", c.NSQ.Topic)
	}
	c.NSQ.Channel = p.str(KeyChannel, "nsqk-kinesis")
	switch {
	case strings.HasSuffix(c.NSQ.Channel, "#ephemeral"):
		p.fail(KeyChannel, "%q is ephemeral: nsqd drops its messages while no bridge is connected; use a durable channel", c.NSQ.Channel)
	case !reNSQName.MatchString(c.NSQ.Channel):
		p.fail(KeyChannel, "%q is not a valid NSQ channel name (1-64 of [.a-zA-Z0-9_-])", c.NSQ.Channel)
	}
	c.NSQ.DeadLetterTopic = p.str(KeyDeadLetterTopic, "")
	if c.NSQ.DeadLetterTopic != "" {
		if !reNSQName.MatchString(c.NSQ.DeadLetterTopic) {
			p.fail(KeyDeadLetterTopic, "%q is not a valid NSQ topic name", c.NSQ.DeadLetterTopic)
		}
		if c.NSQ.DeadLetterTopic == c.NSQ.Topic {
			p.fail(KeyDeadLetterTopic, "must differ from %q (dead letters would loop back into the bridge)", KeyTopic)
		}
	}
	c.NSQ.AuthSecretArn = p.str(KeyAuthSecretArn, "")
	if c.NSQ.AuthSecretArn != "" && !reSecretArn.MatchString(c.NSQ.AuthSecretArn) {
		p.fail(KeyAuthSecretArn, "%q is not a complete Secrets Manager secret ARN (arn:aws:secretsmanager:<region>:<account>:secret:<name>-<6 characters>); the 6-character suffix is needed to grant access to exactly that secret", c.NSQ.AuthSecretArn)
	}
	c.NSQ.AuthSecretKmsKeyArn = p.str(KeyAuthSecretKmsKeyArn, "")
	if c.NSQ.AuthSecretKmsKeyArn != "" {
		if c.NSQ.AuthSecretArn == "" {
			p.fail(KeyAuthSecretKmsKeyArn, "only valid together with %q", KeyAuthSecretArn)
		}
		if !reKmsKeyArn.MatchString(c.NSQ.AuthSecretKmsKeyArn) {
			p.fail(KeyAuthSecretKmsKeyArn, "%q is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)", c.NSQ.AuthSecretKmsKeyArn)
		}
	}
	c.NSQ.TLS = p.boolean(KeyTLS, false)
}

// parseBridge reads the context keys of the Fargate service.
func parseBridge(p *parser, c *Config) {
	b := &c.Bridge
	b.PartitionKey = p.str(KeyPartitionKey, "user_id")
	if !rePartitionKp.MatchString(b.PartitionKey) {
		p.fail(KeyPartitionKey, "%q must be a JSON path without spaces, such as user_id", b.PartitionKey)
	}
	b.KeyBuckets = p.integer(KeyKeyBuckets, 1, 1, 10_000)
	b.MaxBufferedTime = p.duration(KeyMaxBufferedTime, 100*time.Millisecond, time.Millisecond, 10*time.Second)
	b.MaxInFlight = p.integer(KeyMaxInFlight, 0, 1, 1_000_000)
	b.LogLevel = p.str(KeyBridgeLogLevel, "info")
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, b.LogLevel) {
		p.fail(KeyBridgeLogLevel, "%q is not one of debug, info, warn, error", b.LogLevel)
	}
	b.ShutdownTimeout = p.duration(KeyShutdownTimeout, 25*time.Second, time.Second, maxFargateStopTimeout-stopTimeoutMargin)
	b.CPU = p.integer(KeyBridgeCPU, 512, 256, 4096)
	b.MemoryMiB = p.integer(KeyBridgeMemory, 1024, 512, 30720)
	if mems := fargateMemory(b.CPU); mems == nil {
		p.fail(KeyBridgeCPU, "%d is not a Fargate CPU size (256, 512, 1024, 2048, 4096)", b.CPU)
	} else if !slices.Contains(mems, b.MemoryMiB) {
		p.fail(KeyBridgeMemory, "%d MiB is not valid with %d CPU units on Fargate (valid: %d..%d)", b.MemoryMiB, b.CPU, mems[0], mems[len(mems)-1])
	}
	b.MinCount = p.integer(KeyBridgeMinTasks, 1, 1, 100)
	b.MaxCount = p.integer(KeyBridgeMaxTasks, 1, 1, 100)
	b.DesiredCount = p.integer(KeyBridgeTaskCount, 0, 1, 100)
	if b.MaxCount < b.MinCount {
		p.fail(KeyBridgeMaxTasks, "%d is below %s=%d", b.MaxCount, KeyBridgeMinTasks, b.MinCount)
	}
	if b.DesiredCount != 0 && (b.DesiredCount < b.MinCount || b.DesiredCount > b.MaxCount) {
		p.fail(KeyBridgeTaskCount, "%d is outside the autoscaling bounds %d..%d", b.DesiredCount, b.MinCount, b.MaxCount)
	}
	b.CPUTargetPercent = p.integer(KeyBridgeCPUTarget, 60, 10, 90)
	b.ExtraEnv = parseBridgeEnvironment(p)
}

// parseNetwork reads the context keys of the VPC: imported or created.
func parseNetwork(p *parser, c *Config) {
	n := &c.Network
	n.VpcID = p.str(KeyVpcID, "")
	n.SubnetIDs = p.list(KeyVpcSubnetIDs)
	n.AvailabilityZones = p.list(KeyVpcAZs)
	for _, az := range n.AvailabilityZones {
		if !reAZ.MatchString(az) {
			p.fail(KeyVpcAZs, "%q is not an availability zone name such as eu-west-1a", az)
		}
	}
	if n.Imported() {
		if !reVpcID.MatchString(n.VpcID) {
			p.fail(KeyVpcID, "%q is not a VPC id (vpc-0123456789abcdef0)", n.VpcID)
		}
		if len(n.SubnetIDs) == 0 {
			p.fail(KeyVpcSubnetIDs, "required with %q: the private subnets the bridge runs in (they need a route to NSQ and to the Kinesis, ECR, CloudWatch Logs and Secrets Manager endpoints)", KeyVpcID)
		}
		for _, s := range n.SubnetIDs {
			if !reSubnetID.MatchString(s) {
				p.fail(KeyVpcSubnetIDs, "%q is not a subnet id (subnet-0123456789abcdef0)", s)
			}
		}
		if len(n.AvailabilityZones) == 0 {
			p.fail(KeyVpcAZs, "required with %q: one availability zone per subnet, in the same order", KeyVpcID)
		} else if len(n.SubnetIDs)%len(n.AvailabilityZones) != 0 {
			p.fail(KeyVpcAZs, "%d subnets do not spread evenly over %d availability zones", len(n.SubnetIDs), len(n.AvailabilityZones))
		}
		for _, k := range []string{KeyVpcCidr, KeyVpcMaxAZs, KeyVpcNatGateways} {
			if p.has(k) {
				p.fail(k, "only valid when the stack creates the VPC (no %q)", KeyVpcID)
			}
		}
	} else {
		if len(n.SubnetIDs) > 0 {
			p.fail(KeyVpcSubnetIDs, "only valid together with %q", KeyVpcID)
		}
		n.Cidr = p.str(KeyVpcCidr, "10.80.0.0/16")
		if _, ipn, err := net.ParseCIDR(n.Cidr); err != nil || ipn.IP.To4() == nil {
			p.fail(KeyVpcCidr, "%q is not an IPv4 CIDR", n.Cidr)
		} else if ones, _ := ipn.Mask.Size(); ones < 16 || ones > 18 {
			p.fail(KeyVpcCidr, "%q: use a /16 to /18 block (each AZ gets a /24 public and a /22 private subnet)", n.Cidr)
		}
		n.MaxAZs = p.integer(KeyVpcMaxAZs, 2, 1, 6)
		if len(n.AvailabilityZones) > 0 {
			n.MaxAZs = len(n.AvailabilityZones)
			if p.has(KeyVpcMaxAZs) {
				p.fail(KeyVpcMaxAZs, "set either %q or %q", KeyVpcMaxAZs, KeyVpcAZs)
			}
		}
		n.NatGateways = p.integer(KeyVpcNatGateways, 1, 1, 6)
		if n.NatGateways > n.MaxAZs {
			p.fail(KeyVpcNatGateways, "%d NAT gateways for %d availability zones", n.NatGateways, n.MaxAZs)
		}
	}
}

// parseOps reads the context keys of alarms, notifications, logs and removal.
func parseOps(p *parser, c *Config) {
	c.Alarms = DefaultAlarmThresholds()
	if raw, err := toObject(p.get(KeyAlarms)); err != nil {
		p.fail(KeyAlarms, "%v", err)
	} else if raw != nil {
		var overrides map[string]json.Number
		if err := json.Unmarshal(raw, &overrides); err != nil {
			p.fail(KeyAlarms, "want an object of numbers: %v", err)
		} else if err := decodeStrict(raw, &c.Alarms); err != nil {
			p.fail(KeyAlarms, "%v (known keys: %s)", err, strings.Join(alarmKeys(), ", "))
		}
		for k, v := range overrides {
			if f, err := v.Float64(); err != nil || f <= 0 {
				p.fail(KeyAlarms, "%s: threshold %s must be a positive number", k, v)
			}
		}
	}
	c.AlarmEmails = p.list(KeyAlarmEmail)
	for _, e := range c.AlarmEmails {
		if a, err := mail.ParseAddress(e); err != nil || a.Address != e {
			p.fail(KeyAlarmEmail, "%q is not a plain e-mail address", e)
		}
	}

	c.LogRetentionDays = p.integer(KeyLogRetentionDays, 30, 1, 3653)
	if !slices.Contains(validRetentionDays, c.LogRetentionDays) {
		p.fail(KeyLogRetentionDays, "%d is not a CloudWatch Logs retention (one of %v)", c.LogRetentionDays, validRetentionDays)
	}
	c.RemovalPolicy = p.str(KeyRemovalPolicy, RemovalRetain)
	if c.RemovalPolicy != RemovalRetain && c.RemovalPolicy != RemovalDestroy {
		p.fail(KeyRemovalPolicy, "%q: use %q (keep the stream, table, keys, DLQs and logs on stack deletion) or %q (dev stacks)", c.RemovalPolicy, RemovalRetain, RemovalDestroy)
	}
}

// consumerOverrides is the JSON shape of one entry of context "consumers".
type consumerOverrides struct {
	Enabled                   *bool        `json:"enabled"`
	BatchSize                 *json.Number `json:"batchSize"`
	BatchingWindow            *string      `json:"batchingWindow"`
	ParallelizationFactor     *json.Number `json:"parallelizationFactor"`
	RetryAttempts             *json.Number `json:"retryAttempts"`
	MaxRecordAge              *string      `json:"maxRecordAge"`
	StartingPosition          *string      `json:"startingPosition"`
	StartingPositionTimestamp *string      `json:"startingPositionTimestamp"`
	EnhancedFanOut            *bool        `json:"enhancedFanOut"`
	MemoryMiB                 *json.Number `json:"memoryMiB"`
	Timeout                   *string      `json:"timeout"`
}

// parseConsumers reads context "consumers" over the per-consumer defaults and validates each mapping.
func parseConsumers(p *parser, retentionHours int) []ConsumerConfig {
	overrides := map[string]json.RawMessage{}
	if raw, err := toObject(p.get(KeyConsumers)); err != nil {
		p.fail(KeyConsumers, "%v", err)
	} else if raw != nil {
		if err := json.Unmarshal(raw, &overrides); err != nil {
			p.fail(KeyConsumers, "want an object keyed by consumer name: %v", err)
		}
	}
	for name := range overrides {
		if !slices.Contains(ConsumerNames, name) {
			p.fail(KeyConsumers, "unknown consumer %q (known: %s)", name, strings.Join(ConsumerNames, ", "))
		}
	}
	retention := time.Duration(retentionHours) * time.Hour
	var out []ConsumerConfig
	for _, name := range ConsumerNames {
		c := defaultConsumer(name)
		key := KeyConsumers + "." + name
		fail := func(format string, args ...any) { p.fail(key, format, args...) }
		if raw, ok := overrides[name]; ok {
			var o consumerOverrides
			if err := decodeStrict(raw, &o); err != nil {
				fail("%v", err)
			}
			num := func(field string, v *json.Number, dst *int, lo, hi int) {
				if v == nil {
					return
				}
				n, err := toInt(*v)
				if err != nil || n < lo || n > hi {
					fail("%s: %s is not a whole number in %d..%d", field, *v, lo, hi)
					return
				}
				*dst = n
			}
			dur := func(field string, v *string, dst *time.Duration) {
				if v == nil {
					return
				}
				d, err := toDuration(*v)
				if err != nil {
					fail("%s: %v", field, err)
					return
				}
				*dst = d
			}
			if o.Enabled != nil {
				c.Enabled = *o.Enabled
			}
			num("batchSize", o.BatchSize, &c.BatchSize, 1, 10_000)
			dur("batchingWindow", o.BatchingWindow, &c.BatchingWindow)
			num("parallelizationFactor", o.ParallelizationFactor, &c.ParallelizationFactor, 1, 10)
			if o.RetryAttempts != nil {
				if n, err := toInt(*o.RetryAttempts); err == nil && n == -1 {
					fail("retryAttempts: -1 (retry until the record expires) blocks the shard for up to the whole retention; retries must be bounded (0..10000)")
				} else {
					num("retryAttempts", o.RetryAttempts, &c.RetryAttempts, 0, 10_000)
				}
			}
			dur("maxRecordAge", o.MaxRecordAge, &c.MaxRecordAge)
			if o.StartingPosition != nil {
				c.StartingPosition = strings.ToUpper(strings.TrimSpace(*o.StartingPosition))
			}
			if o.StartingPositionTimestamp != nil {
				ts, err := parseTimestamp(*o.StartingPositionTimestamp)
				if err != nil {
					fail("startingPositionTimestamp: %v", err)
				}
				c.StartingTimestamp = ts
			}
			if o.EnhancedFanOut != nil {
				c.EnhancedFanOut = *o.EnhancedFanOut
			}
			num("memoryMiB", o.MemoryMiB, &c.MemoryMiB, 128, 10_240)
			dur("timeout", o.Timeout, &c.Timeout)
		}
		if c.BatchingWindow < 0 || c.BatchingWindow > 300*time.Second || c.BatchingWindow%time.Second != 0 {
			fail("batchingWindow: %s must be whole seconds in 0s..5m", c.BatchingWindow)
		}
		if c.MaxRecordAge < time.Minute || c.MaxRecordAge > 7*24*time.Hour || c.MaxRecordAge%time.Second != 0 {
			fail("maxRecordAge: %s must be whole seconds in 1m..168h (records must not wait forever)", c.MaxRecordAge)
		} else if c.MaxRecordAge > retention {
			fail("maxRecordAge: %s exceeds the stream retention of %dh; records expire before that age", c.MaxRecordAge, retentionHours)
		}
		if c.Timeout < time.Second || c.Timeout > 900*time.Second || c.Timeout%time.Second != 0 {
			fail("timeout: %s must be whole seconds in 1s..15m", c.Timeout)
		}
		switch c.StartingPosition {
		case StartLatest, StartTrimHorizon:
			if !c.StartingTimestamp.IsZero() {
				fail("startingPositionTimestamp is only valid with startingPosition %s", StartAtTimestamp)
			}
		case StartAtTimestamp:
			if c.StartingTimestamp.IsZero() {
				fail("startingPosition %s needs startingPositionTimestamp (RFC 3339, e.g. 2025-01-31T00:00:00Z, or Unix seconds)", StartAtTimestamp)
			}
		default:
			fail("startingPosition %q is not one of %s, %s, %s", c.StartingPosition, StartLatest, StartTrimHorizon, StartAtTimestamp)
		}
		out = append(out, c)
	}
	return out
}

// ManagedBridgeEnv are the NSQK_* variables the stack sets from its own context keys; they cannot
// be overridden through bridgeEnvironment (one place per setting).
var ManagedBridgeEnv = map[string]string{
	"NSQK_LOOKUPD_HTTP_ADDRESS": KeyLookupdHTTP, "NSQK_NSQD_TCP_ADDRESS": KeyNsqdTCP, "NSQK_NSQD_HTTP_ADDRESS": KeyNsqdHTTP,
	"NSQK_TOPIC": KeyTopic, "NSQK_CHANNEL": KeyChannel, "NSQK_STREAM": KeyStreamName, "NSQK_PARTITION_KEY": KeyPartitionKey,
	"NSQK_KEY_BUCKETS": KeyKeyBuckets, "NSQK_MAX_BUFFERED_TIME": KeyMaxBufferedTime, "NSQK_MAX_IN_FLIGHT": KeyMaxInFlight,
	"NSQK_DEAD_LETTER_TOPIC": KeyDeadLetterTopic, "NSQK_LOG_LEVEL": KeyBridgeLogLevel, "NSQK_SHUTDOWN_TIMEOUT": KeyShutdownTimeout,
	"NSQK_TLS": KeyTLS, "NSQK_AUTH_SECRET": KeyAuthSecretArn,
	"NSQK_METRICS_ADDRESS": "(fixed :9090: the container health check probes it)", "NSQK_CLOUDWATCH_EMF": "(always true: the alarms need it)",
	"NSQK_HEALTHCHECK": "(only for the health check command)",
}

var reEnvName = regexp.MustCompile(`^NSQK_[A-Z0-9_]+$`)

func parseBridgeEnvironment(p *parser) map[string]string {
	raw, err := toObject(p.get(KeyBridgeEnvironment))
	if err != nil {
		p.fail(KeyBridgeEnvironment, "%v", err)
		return nil
	}
	if raw == nil {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		p.fail(KeyBridgeEnvironment, "%v", err)
		return nil
	}
	out := map[string]string{}
	for k, v := range m {
		if !reEnvName.MatchString(k) {
			p.fail(KeyBridgeEnvironment, "%q: only NSQK_* variables (the bridge's flags) can be set", k)
			continue
		}
		if owner, ok := ManagedBridgeEnv[k]; ok {
			p.fail(KeyBridgeEnvironment, "%s is managed by the stack: set %s instead", k, owner)
			continue
		}
		switch t := v.(type) {
		case string:
			out[k] = t
		case float64:
			out[k] = strconv.FormatFloat(t, 'f', -1, 64)
		case bool:
			out[k] = strconv.FormatBool(t)
		default:
			p.fail(KeyBridgeEnvironment, "%s: want a string, number or boolean, got %T", k, v)
		}
	}
	return out
}

func parseTimestamp(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f > 0 {
		sec := int64(f)
		return time.Unix(sec, int64((f-float64(sec))*1e9)).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither RFC 3339 (2025-01-31T00:00:00Z) nor Unix seconds", s)
}

func alarmKeys() []string {
	var keys []string
	b, _ := json.Marshal(DefaultAlarmThresholds())
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// CheckUnknownKeys reports plain camelCase context keys that this app does not read (typos).
// CDK's own keys (feature flags, lookups, CLI settings) contain ':', '@' or '-' and are ignored.
func CheckUnknownKeys(all map[string]any) error {
	var errs []error
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if plainKey.MatchString(k) && !slices.Contains(KnownKeys, k) {
			errs = append(errs, fmt.Errorf("context %q: unknown key (see README.md, Context reference, for the list)", k))
		}
	}
	return errors.Join(errs...)
}

// Consumer returns the configuration of the named consumer.
func (c *Config) Consumer(name string) (ConsumerConfig, bool) {
	for _, cc := range c.Consumers {
		if cc.Name == name {
			return cc, true
		}
	}
	return ConsumerConfig{}, false
}

// FunctionName is the physical Lambda function name of a consumer: <stackName>-<consumer>. The
// functions publish their EMF metrics with dimension Function = AWS_LAMBDA_FUNCTION_NAME, so the
// alarms can name it up front.
func (c *Config) FunctionName(consumer string) string { return c.StackName + "-" + consumer }
