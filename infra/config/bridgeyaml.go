package config

import (
	"go.yaml.in/yaml/v3"
)

// bridgeRoute is one entry of the bridge program's config routes list (field names as its flags).
// Fields left empty take the bridge's global settings, which the stack passes as NSQK_* variables.
type bridgeRoute struct {
	Name            string `yaml:"name"`
	Topic           string `yaml:"topic"`
	Channel         string `yaml:"channel,omitempty"`
	Stream          string `yaml:"stream"`
	PartitionKey    string `yaml:"partition-key,omitempty"`
	KeyBuckets      int    `yaml:"key-buckets,omitempty"`
	Ordering        string `yaml:"ordering,omitempty"`
	DeadLetterTopic string `yaml:"dead-letter-topic,omitempty"`
	MaxBufferedTime string `yaml:"max-buffered-time,omitempty"`
	RecordKeys      string `yaml:"record-keys,omitempty"`
}

// BridgeConfigYAML renders the bridge's config (env NSQK_CONFIG_YAML) from context "routes": the
// routes list only; every global setting stays an NSQK_* variable. Empty without routes.
func (c *Config) BridgeConfigYAML() string {
	if len(c.Routes) == 0 {
		return ""
	}
	var doc struct {
		Routes []bridgeRoute `yaml:"routes"`
	}
	for _, r := range c.Routes {
		br := bridgeRoute{Name: r.Name, Topic: r.Topic, Channel: r.Channel, Stream: r.Stream.Name, PartitionKey: r.PartitionKey,
			KeyBuckets: r.KeyBuckets, Ordering: r.Ordering, DeadLetterTopic: r.DeadLetterTopic, RecordKeys: r.RecordKeys}
		if r.MaxBufferedTime > 0 {
			br.MaxBufferedTime = r.MaxBufferedTime.String()
		}
		doc.Routes = append(doc.Routes, br)
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		panic(err) // plain strings and numbers always marshal
	}
	return string(out)
}
