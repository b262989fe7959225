package config

import (
	"regexp"
	"slices"
	"time"
)

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
	AcceptReordering bool              // the user accepts that several tasks reorder a key's messages
	Groups           int               // services of one task each, splitting the nsqd nodes (NSQK_NSQD_PARTITION i/N)
}

// Ordering is the bridge's ordering mode: strict unless bridgeEnvironment sets NSQK_ORDERING.
func (b BridgeConfig) Ordering() string {
	if o := b.ExtraEnv["NSQK_ORDERING"]; o != "" {
		return o
	}
	return "strict"
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

var rePartitionKey = regexp.MustCompile(`^\S+$`)

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

// parseBridge reads the context keys of the Fargate service.
func parseBridge(p *parser, c *Config) {
	b := &c.Bridge
	b.PartitionKey = p.str(KeyPartitionKey, "user_id")
	if !rePartitionKey.MatchString(b.PartitionKey) {
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
	checkBridgeMemory(p, b)
	// NSQ splits a channel's messages between its clients: with two bridge tasks a key's messages
	// are written by both, in no particular order. Strict order and several tasks exclude each other
	// unless the user says the order does not matter.
	b.AcceptReordering = p.boolean(KeyAcceptReordering, false)
	strict := b.Ordering() == "strict"
	if len(c.Routes) > 0 {
		// A route's own ordering overrides the global one.
		strict = false
		for _, r := range c.Routes {
			strict = strict || cmpOr(r.Ordering, b.Ordering()) == "strict"
		}
	}
	if b.MaxCount > 1 && strict && !b.AcceptReordering {
		p.fail(KeyBridgeMaxTasks, "%d tasks with strict ordering: NSQ splits the channel between the tasks and a key's messages reach Kinesis out of order; keep one task (raise bridgeCpu instead), or set %s=true to accept per-key reordering", b.MaxCount, KeyAcceptReordering)
	}
	// Groups split the nsqd nodes that nsqlookupd lists: each node is read by exactly one group,
	// so each group is one task (a second task would share its nodes' channels).
	b.Groups = p.integer(KeyBridgeGroups, 1, 1, 100)
	if b.Groups > 1 {
		if len(c.NSQ.LookupdHTTPAddresses) == 0 {
			p.fail(KeyBridgeGroups, "%d groups split the nsqd nodes nsqlookupd lists: set %q (with %q every group would read every node)", b.Groups, KeyLookupdHTTP, KeyNsqdTCP)
		}
		if b.MaxCount > 1 {
			p.fail(KeyBridgeGroups, "%d groups run one task each: %s=%d would put two tasks on one group's nodes; raise %s instead", b.Groups, KeyBridgeMaxTasks, b.MaxCount, KeyBridgeGroups)
		}
	}
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
	"NSQK_CONFIG_YAML": KeyRoutes, "NSQK_CONFIG": KeyRoutes, "NSQK_NSQD_PARTITION": KeyBridgeGroups,
}

var reEnvName = regexp.MustCompile(`^NSQK_[A-Z0-9_]+$`)

func parseBridgeEnvironment(p *parser) map[string]string {
	var m map[string]string
	if !p.value(KeyBridgeEnvironment, &m) || len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !reEnvName.MatchString(k) {
			p.fail(KeyBridgeEnvironment, "%q: only NSQK_* variables (the bridge's flags) can be set", k)
			delete(m, k)
		} else if owner, ok := ManagedBridgeEnv[k]; ok {
			p.fail(KeyBridgeEnvironment, "%s is managed by the stack: set %s instead", k, owner)
			delete(m, k)
		} else if why := insecureBridgeEnv(k, m[k]); why != "" {
			p.fail(KeyBridgeEnvironment, "%s is refused: %s", k, why)
			delete(m, k)
		}
	}
	return m
}
