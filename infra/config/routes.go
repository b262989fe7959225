package config

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Route carries one NSQ topic into one Kinesis stream of its own. With context "routes" the one
// bridge process runs every route (one lane set, fence and shard map each) and the stack deploys
// one stream per route.
type Route struct {
	Name            string // the route's EMF Route dimension and the suffix of its alarms; default the topic
	ID              string // Name as a construct id (letters and digits)
	Topic           string
	Channel         string // empty: the bridge's global channel (nsqChannel, default <stackName>-kinesis)
	DeadLetterTopic string // empty: the bridge's default <topic>_dead
	Stream          StreamConfig
	PartitionKey    string        // empty: partitionKey
	KeyBuckets      int           // 0: keyBuckets
	Ordering        string        // empty: the global ordering
	MaxBufferedTime time.Duration // 0: maxBufferedTime
	RecordKeys      string        // empty: the bridge's default (user)
}

// RouteEntry is the shape of one entry of context "routes".
type RouteEntry struct {
	Name            string         `json:"name"`
	Topic           string         `json:"topic"`
	Channel         string         `json:"channel"`
	DeadLetterTopic string         `json:"deadLetterTopic"`
	StreamName      string         `json:"streamName"`
	StreamMode      string         `json:"streamMode"`
	ShardCount      *int           `json:"shardCount"`
	RetentionHours  *int           `json:"retentionHours"`
	PartitionKey    string         `json:"partitionKey"`
	KeyBuckets      *int           `json:"keyBuckets"`
	Ordering        string         `json:"ordering"`
	MaxBufferedTime *time.Duration `json:"maxBufferedTime"`
	RecordKeys      string         `json:"recordKeys"`
}

// RouteFields are the keys an entry of context "routes" accepts (for the reference docs).
func RouteFields() []string { return jsonTags(RouteEntry{}) }

// routeSingleKeys describe the one route of a stack without "routes": refused together with it.
var routeSingleKeys = []string{KeyTopic, KeyDeadLetterTopic, KeyStreamName, KeyStreamMode, KeyShardCount, KeyRetentionHours}

var reNotAlnum = regexp.MustCompile(`[^A-Za-z0-9]+`)

// parseRoutes reads context "routes". Each problem names the route (index and name) and the field.
func parseRoutes(p *parser, c *Config) {
	if !p.has(KeyRoutes) {
		return
	}
	raw := p.get(KeyRoutes)
	if t, ok := raw.(string); ok {
		// -c 'routes=[{...}]': the list arrives as text.
		if err := json.Unmarshal([]byte(t), &raw); err != nil {
			p.fail(KeyRoutes, "want a JSON list of route objects: %v", err)
			return
		}
	}
	var entries []map[string]any
	if err := decode(raw, &entries); err != nil {
		p.fail(KeyRoutes, "want a list of route objects: %v", err)
		return
	}
	if len(entries) == 0 {
		p.fail(KeyRoutes, "the list is empty: name at least one route, or leave the key out for the single-topic settings")
		return
	}
	for _, k := range routeSingleKeys {
		if p.has(k) {
			p.fail(k, "describes the single route of a stack without %q: with routes each route sets its own (topic, deadLetterTopic, streamName, streamMode, shardCount, retentionHours)", KeyRoutes)
		}
	}
	names, ids, streams, pairs := map[string]int{}, map[string]int{}, map[string]int{}, map[string]int{}
	for i, raw := range entries {
		var e RouteEntry
		name := fmt.Sprint(raw["name"])
		if raw["name"] == nil {
			name = fmt.Sprint(raw["topic"])
		}
		key := fmt.Sprintf("%s[%d] %q", KeyRoutes, i, name)
		if err := decode(raw, &e); err != nil {
			p.fail(key, "%v", err)
			continue
		}
		r := Route{Name: e.Name, Topic: e.Topic, Channel: e.Channel, DeadLetterTopic: e.DeadLetterTopic,
			PartitionKey: e.PartitionKey, Ordering: e.Ordering, RecordKeys: e.RecordKeys}
		if r.Name == "" {
			r.Name = r.Topic
		}
		fail := func(field, format string, args ...any) {
			p.fail(key, "%s: %s", field, fmt.Sprintf(format, args...))
		}
		switch {
		case r.Topic == "":
			fail("topic", "the NSQ topic of the route is required")
		case !reNSQName.MatchString(strings.TrimSuffix(r.Topic, "#ephemeral")):
			fail("topic", "%q is not a valid NSQ topic name (1-64 of [.a-zA-Z0-9_-])", r.Topic)
		}
		if r.Channel != "" {
			switch {
			case strings.HasSuffix(r.Channel, "#ephemeral"):
				fail("channel", "%q is ephemeral: nsqd drops its messages while no bridge is connected; use a durable channel", r.Channel)
			case !reNSQName.MatchString(r.Channel):
				fail("channel", "%q is not a valid NSQ channel name (1-64 of [.a-zA-Z0-9_-])", r.Channel)
			}
		}
		if r.DeadLetterTopic != "" {
			if !reNSQName.MatchString(r.DeadLetterTopic) {
				fail("deadLetterTopic", "%q is not a valid NSQ topic name", r.DeadLetterTopic)
			} else if r.DeadLetterTopic == r.Topic {
				fail("deadLetterTopic", "must differ from the route's topic (dead letters would loop back into the bridge)")
			}
		}
		r.ID = reNotAlnum.ReplaceAllString(r.Name, "")
		if r.ID == "" || len(r.Name) > 64 {
			fail("name", "%q must be 1-64 characters with at least one letter or digit (alarm names and construct ids are derived from it)", r.Name)
		} else if j, ok := names[r.Name]; ok {
			fail("name", "%q is also the name of routes[%d]; two routes on one topic need distinct names", r.Name, j)
		} else if j, ok := ids[strings.ToLower(r.ID)]; ok {
			fail("name", "%q differs from routes[%d]'s name only in punctuation or case; the stack derives resource ids from the letters and digits", r.Name, j)
		}
		names[r.Name], ids[strings.ToLower(r.ID)] = i, i
		if r.Topic != "" {
			channel := cmpOr(r.Channel, c.NSQ.Channel)
			pair := r.Topic + "/" + channel
			if j, ok := pairs[pair]; ok {
				fail("channel", "topic %q channel %q: routes[%d] reads it too; each topic/channel pair may be read by one route only", r.Topic, channel, j)
			}
			pairs[pair] = i
		}

		s := &r.Stream
		s.Name = e.StreamName
		if s.Name == "" {
			fail("streamName", "the route's Kinesis stream name is required (one stream per route)")
		} else if !reStreamName.MatchString(s.Name) {
			fail("streamName", "%q must be 1-128 characters of letters, digits, '_', '.' and '-'", s.Name)
		} else if j, ok := streams[s.Name]; ok {
			fail("streamName", "%q is also the stream of routes[%d]; each route gets a stream of its own", s.Name, j)
		}
		streams[s.Name] = i
		s.Mode = cmpOr(e.StreamMode, StreamModeProvisioned)
		switch s.Mode {
		case StreamModeProvisioned:
			s.ShardCount = 2
			if e.ShardCount != nil {
				if *e.ShardCount < 1 || *e.ShardCount > 10_000 {
					fail("shardCount", "%d is out of range 1..10000", *e.ShardCount)
				} else {
					s.ShardCount = *e.ShardCount
				}
			}
		case StreamModeOnDemand:
			if e.ShardCount != nil {
				fail("shardCount", "only valid with streamMode %s (on-demand streams size themselves)", StreamModeProvisioned)
			}
		default:
			fail("streamMode", "%q is not a capacity mode: use %q (with shardCount) or %q", s.Mode, StreamModeProvisioned, StreamModeOnDemand)
		}
		s.RetentionHours = 24
		if e.RetentionHours != nil {
			if *e.RetentionHours < 24 || *e.RetentionHours > 8760 {
				fail("retentionHours", "%d is out of range 24..8760", *e.RetentionHours)
			} else {
				s.RetentionHours = *e.RetentionHours
			}
		}

		if r.PartitionKey != "" && !rePartitionKey.MatchString(r.PartitionKey) {
			fail("partitionKey", "%q must be a JSON path without spaces, such as user_id", r.PartitionKey)
		}
		if e.KeyBuckets != nil {
			if *e.KeyBuckets < 1 || *e.KeyBuckets > 10_000 {
				fail("keyBuckets", "%d is out of range 1..10000", *e.KeyBuckets)
			} else {
				r.KeyBuckets = *e.KeyBuckets
			}
		}
		if r.Ordering != "" && !slices.Contains([]string{"strict", "relaxed"}, r.Ordering) {
			fail("ordering", "%q is not strict or relaxed", r.Ordering)
		}
		if e.MaxBufferedTime != nil {
			if *e.MaxBufferedTime < time.Millisecond || *e.MaxBufferedTime > 10*time.Second {
				fail("maxBufferedTime", "%s is out of range 1ms..10s", *e.MaxBufferedTime)
			} else {
				r.MaxBufferedTime = *e.MaxBufferedTime
			}
		}
		if r.RecordKeys != "" && !slices.Contains([]string{"user", "lane"}, r.RecordKeys) {
			fail("recordKeys", "%q is not user or lane", r.RecordKeys)
		}
		c.Routes = append(c.Routes, r)
	}
	if len(c.Routes) > 0 {
		// The first route's stream is the stack's primary stream: the archive reads it.
		c.Stream = c.Routes[0].Stream
	}
}

// Route returns the named route.
func (c *Config) Route(name string) (Route, bool) {
	for _, r := range c.Routes {
		if r.Name == name {
			return r, true
		}
	}
	return Route{}, false
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func routeNames(rs []Route) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}
