package config

import (
	"slices"
	"sort"
	"strings"
	"time"
)

// The built-in consumer functions. The Lambda code for each lives in dist/<name>/bootstrap
// (built by `make lambda`).
const (
	ConsumerMonitor      = "monitor"
	ConsumerLastLocation = "lastlocation"
)

// BuiltinConsumers are deployed by default, in this order (template order, dashboard order).
var BuiltinConsumers = []string{ConsumerMonitor, ConsumerLastLocation}

// Starting positions accepted for a consumer's event source mapping.
const (
	StartLatest      = "LATEST"
	StartTrimHorizon = "TRIM_HORIZON"
	StartAtTimestamp = "AT_TIMESTAMP"
)

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

// defaultConsumer returns the defaults for a consumer. The monitor is a health signal that only
// cares about now (LATEST, few retries); every other consumer must not miss records of a fresh
// stream (TRIM_HORIZON, more retries before a batch goes to the on-failure destination).
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

// ConsumerOverrides is the shape of one entry of context "consumers"; every field is optional.
type ConsumerOverrides struct {
	Enabled                   *bool          `json:"enabled"`
	BatchSize                 *int           `json:"batchSize"`
	BatchingWindow            *time.Duration `json:"batchingWindow"`
	ParallelizationFactor     *int           `json:"parallelizationFactor"`
	RetryAttempts             *int           `json:"retryAttempts"`
	MaxRecordAge              *time.Duration `json:"maxRecordAge"`
	StartingPosition          *string        `json:"startingPosition"`
	StartingPositionTimestamp *time.Time     `json:"startingPositionTimestamp"`
	EnhancedFanOut            *bool          `json:"enhancedFanOut"`
	MemoryMiB                 *int           `json:"memoryMiB"`
	Timeout                   *time.Duration `json:"timeout"`
}

// parseConsumers reads context "consumers" over the per-consumer defaults and validates each mapping.
func parseConsumers(p *parser, retentionHours int) []ConsumerConfig {
	var overrides map[string]any
	p.value(KeyConsumers, &overrides)
	var names []string
	for name := range overrides {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !slices.Contains(BuiltinConsumers, name) {
			p.fail(KeyConsumers, "unknown consumer %q (known: %s)", name, strings.Join(BuiltinConsumers, ", "))
		}
	}
	var out []ConsumerConfig
	for _, name := range BuiltinConsumers {
		c := defaultConsumer(name)
		key := KeyConsumers + "." + name
		if raw, ok := overrides[name]; ok {
			var o ConsumerOverrides
			if err := decode(raw, &o); err != nil {
				p.fail(key, "%v", err)
			} else {
				o.apply(p, key, &c)
			}
		}
		c.validate(p, key, retentionHours)
		out = append(out, c)
	}
	return out
}

// apply sets the fields given in o, checking each against its bounds.
func (o ConsumerOverrides) apply(p *parser, key string, c *ConsumerConfig) {
	num := func(field string, v *int, dst *int, lo, hi int) {
		if v == nil {
			return
		}
		if *v < lo || *v > hi {
			p.fail(key, "%s: %d is not a whole number in %d..%d", field, *v, lo, hi)
			return
		}
		*dst = *v
	}
	set := func(v *time.Duration, dst *time.Duration) {
		if v != nil {
			*dst = *v
		}
	}
	if o.Enabled != nil {
		c.Enabled = *o.Enabled
	}
	num("batchSize", o.BatchSize, &c.BatchSize, 1, 10_000)
	set(o.BatchingWindow, &c.BatchingWindow)
	num("parallelizationFactor", o.ParallelizationFactor, &c.ParallelizationFactor, 1, 10)
	if o.RetryAttempts != nil && *o.RetryAttempts == -1 {
		p.fail(key, "retryAttempts: -1 (retry until the record expires) blocks the shard for up to the whole retention; retries must be bounded (0..10000)")
	} else {
		num("retryAttempts", o.RetryAttempts, &c.RetryAttempts, 0, 10_000)
	}
	set(o.MaxRecordAge, &c.MaxRecordAge)
	if o.StartingPosition != nil {
		c.StartingPosition = strings.ToUpper(*o.StartingPosition)
	}
	if o.StartingPositionTimestamp != nil {
		c.StartingTimestamp = *o.StartingPositionTimestamp
	}
	if o.EnhancedFanOut != nil {
		c.EnhancedFanOut = *o.EnhancedFanOut
	}
	num("memoryMiB", o.MemoryMiB, &c.MemoryMiB, 128, 10_240)
	set(o.Timeout, &c.Timeout)
}

// validate checks the combined result (defaults plus overrides).
func (c ConsumerConfig) validate(p *parser, key string, retentionHours int) {
	fail := func(format string, args ...any) { p.fail(key, format, args...) }
	retention := time.Duration(retentionHours) * time.Hour
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
}

// ConsumerFields are the keys an entry of context "consumers" accepts (for the reference docs).
func ConsumerFields() []string { return jsonTags(ConsumerOverrides{}) }
