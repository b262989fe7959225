package config

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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
	Route                 string // the route whose stream it reads; empty without routes
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
	Route                     *string        `json:"route"`
}

// reConsumerName is the shape of a consumer's name: a Go package directory under functions/ and
// the suffix of its Lambda function name (<stackName>-<name>, at most 64 characters).
var reConsumerName = regexp.MustCompile(`^[a-z][a-z0-9]{0,22}$`)

// parseConsumers reads context "consumers" over the per-consumer defaults and validates each
// mapping. A name other than the built-in ones adds that consumer, built from functions/<name>.
func parseConsumers(p *parser, cfg *Config) []ConsumerConfig {
	var overrides map[string]any
	p.value(KeyConsumers, &overrides)
	names := slices.Clone(BuiltinConsumers)
	for _, name := range slices.Sorted(maps.Keys(overrides)) {
		switch {
		case slices.Contains(BuiltinConsumers, name):
		case name == "bridge":
			p.fail(KeyConsumers, "%q is the bridge program (functions/bridge), not a Lambda consumer", name)
		case !reConsumerName.MatchString(name):
			p.fail(KeyConsumers, "consumer name %q: use 1-23 lowercase letters and digits, starting with a letter (the directory functions/<name> and the function name <stackName>-<name>)", name)
		default:
			names = append(names, name)
		}
	}
	var out []ConsumerConfig
	for _, name := range names {
		c := defaultConsumer(name)
		key := KeyConsumers + "." + name
		if raw, ok := overrides[name]; ok && raw != nil {
			var o ConsumerOverrides
			if err := decode(raw, &o); err != nil {
				p.fail(key, "%v", err)
			} else {
				o.apply(p, key, &c)
			}
		}
		retentionHours := cfg.Stream.RetentionHours
		if len(cfg.Routes) > 0 {
			// Without a route named, a consumer reads the first route's stream.
			c.Route = cmpOr(c.Route, cfg.Routes[0].Name)
			if r, ok := cfg.Route(c.Route); ok {
				retentionHours = r.Stream.RetentionHours
			} else {
				p.fail(key, "route: %q is not the name of a route in %q (%s)", c.Route, KeyRoutes, quoted(routeNames(cfg.Routes)))
			}
		} else if c.Route != "" {
			p.fail(key, "route: %q names a route, but context %q is not set", c.Route, KeyRoutes)
		}
		c.validate(p, key, retentionHours)
		out = append(out, c)
	}
	return out
}

// CheckConsumerSources reports every configured consumer whose main package is missing from the
// repository at root: each consumer is built from functions/<name>/main.go (`make lambda`).
func CheckConsumerSources(root string, c *Config) error {
	var errs []error
	for _, name := range c.ConsumerNames() {
		main := filepath.Join("functions", name, "main.go")
		if _, err := os.Stat(filepath.Join(root, main)); err != nil {
			errs = append(errs, fmt.Errorf("context %q: consumer %q has no %s: a consumer is a main package in functions/<name> (write it, or remove the entry)", KeyConsumers, name, main))
		}
	}
	return errors.Join(errs...)
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
	if o.Route != nil {
		c.Route = *o.Route
	}
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
