// Package config is the typed, validated configuration of one nsqk deployment, read from CDK
// context (cdk.json or `cdk synth -c key=value`). It is plain Go: it imports no jsii or CDK
// package, so its tests build and run in seconds. One file per section of the stack.
package config

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Config is the whole, validated configuration of one nsqk deployment.
type Config struct {
	StackName string
	Account   string // optional; empty = environment-agnostic stack
	Region    string // optional

	Stream    StreamConfig // with Routes: the first route's stream
	Routes    []Route      // empty: the single topic of nsqTopic into streamName
	NSQ       NSQConfig
	Bridge    BridgeConfig
	Network   NetworkConfig
	Consumers []ConsumerConfig // the built-in ones first, then the team's own in name order
	OnFailure OnFailureConfig
	Archive   ArchiveConfig
	Alarms    AlarmThresholds

	AlarmEmails      []string
	LogRetentionDays int
	RemovalPolicy    string // RemovalRetain or RemovalDestroy
	LambdaDistDir    string // where `make lambda` puts <name>/bootstrap; relative to the repository root unless absolute
}

// Removal policies accepted in context key removalPolicy.
const (
	RemovalRetain  = "retain"
	RemovalDestroy = "destroy"
)

// ContextFunc returns the raw context value for a key, or nil when it is not set.
type ContextFunc func(key string) any

// MapContext adapts a plain map (the app's whole context, or a test's) to a ContextFunc.
func MapContext(m map[string]any) ContextFunc {
	return func(k string) any { return m[k] }
}

// Load checks the whole context for unknown keys and parses it: what the app runs.
func Load(all map[string]any) (*Config, error) {
	if err := CheckUnknownKeys(all); err != nil {
		return nil, err
	}
	return Parse(MapContext(all))
}

// Parse reads and validates every context key. The error lists every problem found, each
// naming its key.
func Parse(get ContextFunc) (*Config, error) {
	p := &parser{get: get}
	c := &Config{}
	parseStack(p, c)
	parseStream(p, c)
	parseNSQ(p, c)
	parseRoutes(p, c)
	parseBridge(p, c)
	parseNetwork(p, c)
	c.Consumers = parseConsumers(p, c)
	parseOnFailure(p, c)
	parseArchive(p, c)
	parseAlarms(p, c)
	parseOps(p, c)
	if len(p.errs) > 0 {
		return nil, fmt.Errorf("invalid nsqk configuration:\n%w", errors.Join(p.errs...))
	}
	return c, nil
}

var (
	reStackName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]{0,39}$`)
	reAccount   = regexp.MustCompile(`^\d{12}$`)
	reRegion    = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d$`)
)

func parseStack(p *parser, c *Config) {
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
	c.LambdaDistDir = p.str(KeyLambdaDistDir, "dist")
}

// plainKey matches the shape of this app's keys; CDK's own keys contain ':', '@' or '-'.
var plainKey = regexp.MustCompile(`^[a-z][A-Za-z0-9]*$`)

// CheckUnknownKeys reports plain camelCase context keys that this app does not read (typos).
// CDK's own keys (feature flags, lookups, CLI settings) contain ':', '@' or '-' and are ignored.
func CheckUnknownKeys(all map[string]any) error {
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var errs []error
	for _, k := range keys {
		if plainKey.MatchString(k) && !slices.Contains(KnownKeys, k) {
			errs = append(errs, fmt.Errorf("context %q: unknown key (see the context reference in the deployment guide for the list)", k))
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

// ConsumerNames lists the configured consumers in template (and dashboard) order.
func (c *Config) ConsumerNames() []string {
	var out []string
	for _, cc := range c.Consumers {
		out = append(out, cc.Name)
	}
	return out
}

// FunctionName is the physical Lambda function name of a consumer: <stackName>-<consumer>. The
// functions publish their EMF metrics with dimension Function = AWS_LAMBDA_FUNCTION_NAME, so the
// alarms can name it up front.
func (c *Config) FunctionName(consumer string) string { return c.StackName + "-" + consumer }

// quoted renders names for an error message: "a", "b".
func quoted(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}
