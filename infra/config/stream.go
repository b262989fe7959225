package config

import "regexp"

// Stream capacity modes accepted in context key streamMode.
const (
	StreamModeProvisioned = "provisioned"
	StreamModeOnDemand    = "on-demand"
)

// StreamConfig describes the Kinesis data stream.
type StreamConfig struct {
	Name           string
	Mode           string // StreamModeProvisioned or StreamModeOnDemand
	ShardCount     int    // provisioned only
	RetentionHours int
}

var reStreamName = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,128}$`)

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
