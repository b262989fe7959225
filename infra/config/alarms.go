package config

import (
	"encoding/json"
	"maps"
	"net/mail"
	"slices"
	"strings"
)

// AlarmThresholds holds every alarm threshold (the deployment guide explains each default).
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
	DeadLetterQueueVisible      float64 `json:"deadLetterQueueVisible"`      // per consumer dead-letter queue of user records, max over 5 min
	DeadLetteredRecords         float64 `json:"deadLetteredRecords"`         // per consumer user records dead-lettered, sum over 5 min
	FailedBatchesStored         float64 `json:"failedBatchesStored"`         // objects put into the on-failure bucket, sum over 5 min (S3 destination)
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
		DeadLetterQueueVisible:      1,
		DeadLetteredRecords:         1,
		FailedBatchesStored:         1,
	}
}

// AlarmKeys are the keys context "alarms" accepts, sorted.
func AlarmKeys() []string { return jsonTags(DefaultAlarmThresholds()) }

// parseAlarms reads context "alarms" over the defaults: every threshold a positive number.
func parseAlarms(p *parser, c *Config) {
	c.Alarms = DefaultAlarmThresholds()
	var overrides map[string]float64
	if !p.value(KeyAlarms, &overrides) {
		return
	}
	ok := true
	for _, k := range slices.Sorted(maps.Keys(overrides)) {
		if !slices.Contains(AlarmKeys(), k) {
			p.fail(KeyAlarms, "unknown field %q (known keys: %s)", k, strings.Join(AlarmKeys(), ", "))
			ok = false
		} else if overrides[k] <= 0 {
			p.fail(KeyAlarms, "%s: threshold %v must be a positive number", k, overrides[k])
			ok = false
		}
	}
	if ok {
		if err := decode(overrides, &c.Alarms); err != nil {
			p.fail(KeyAlarms, "%v", err)
		}
	}
}

// validRetentionDays are the values CloudWatch Logs accepts.
var validRetentionDays = []int{1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}

// parseOps reads the context keys of notifications, logs and removal.
func parseOps(p *parser, c *Config) {
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
		p.fail(KeyRemovalPolicy, "%q: use %q (keep the stream, tables, keys, queues and logs on stack deletion) or %q (dev stacks)", c.RemovalPolicy, RemovalRetain, RemovalDestroy)
	}
}

// jsonTags returns the JSON object keys of a struct value, sorted.
func jsonTags(v any) []string {
	b, _ := json.Marshal(v)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return slices.Sorted(maps.Keys(m))
}
