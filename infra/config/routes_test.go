package config

import (
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/nsqk/nsqk/shared/bridgecmd"
)

// twoRoutes is a valid context with two routes and no single-topic keys.
func twoRoutes() map[string]any {
	return map[string]any{
		KeyLookupdHTTP: []any{"lookupd-0:4161"},
		KeyRoutes: []any{
			map[string]any{"topic": "locations", "streamName": "locations", "shardCount": float64(4), "partitionKey": "user_id"},
			map[string]any{"name": "orders", "topic": "orders_v2", "channel": "to-kinesis", "streamName": "orders", "streamMode": "on-demand",
				"retentionHours": float64(48), "ordering": "relaxed", "maxBufferedTime": "20ms", "recordKeys": "lane", "keyBuckets": float64(3),
				"deadLetterTopic": "orders_failed"},
		},
		KeyConsumers: map[string]any{"lastlocation": map[string]any{"route": "orders"}},
	}
}

func TestParseRoutes(t *testing.T) {
	c := parse(t, twoRoutes())
	if len(c.Routes) != 2 {
		t.Fatalf("routes: %+v", c.Routes)
	}
	a, b := c.Routes[0], c.Routes[1]
	wantEq := func(what string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	wantEq("route 0 name (default: topic)", a.Name, "locations")
	wantEq("route 0 stream", a.Stream, StreamConfig{Name: "locations", Mode: StreamModeProvisioned, ShardCount: 4, RetentionHours: 24})
	wantEq("route 0 channel (global)", a.Channel, "")
	wantEq("route 1 name", b.Name, "orders")
	wantEq("route 1 stream", b.Stream, StreamConfig{Name: "orders", Mode: StreamModeOnDemand, RetentionHours: 48})
	wantEq("route 1 buffering", b.MaxBufferedTime, 20*time.Millisecond)
	wantEq("route 1 buckets", b.KeyBuckets, 3)
	wantEq("route 1 record keys", b.RecordKeys, "lane")
	wantEq("primary stream", c.Stream.Name, "locations")
	wantEq("global channel", c.NSQ.Channel, "nsqk-kinesis")
	mon, _ := c.Consumer(ConsumerMonitor)
	last, _ := c.Consumer(ConsumerLastLocation)
	wantEq("monitor's route (default: the first)", mon.Route, "locations")
	wantEq("lastlocation's route", last.Route, "orders")
	wantEq("groups default", c.Bridge.Groups, 1)

	// Without routes nothing changes: no route, consumers name none.
	s := parse(t, minimal())
	if len(s.Routes) != 0 || s.Consumers[0].Route != "" {
		t.Errorf("single-topic config grew routes: %+v %+v", s.Routes, s.Consumers[0])
	}
	// -c routes='[...]' arrives as text.
	cli := with(minimal(), KeyTopic, nil, KeyRoutes, `[{"topic":"a","streamName":"sa"},{"topic":"b","streamName":"sb","shardCount":"3"}]`)
	if r := parse(t, cli).Routes; len(r) != 2 || r[1].Stream.ShardCount != 3 {
		t.Errorf("routes from text: %+v", r)
	}
}

func TestParseRoutesRejects(t *testing.T) {
	route := func(kv ...any) map[string]any {
		m := map[string]any{"topic": "t", "streamName": "s"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	base := map[string]any{KeyLookupdHTTP: "lookupd:4161"}
	cases := []struct {
		name string
		ctx  map[string]any
		want string
	}{
		{"empty list", with(base, KeyRoutes, []any{}), `context "routes": the list is empty`},
		{"not a list", with(base, KeyRoutes, "locations"), `context "routes": want a JSON list`},
		{"with nsqTopic", with(base, KeyTopic, "x", KeyRoutes, []any{route()}), `context "nsqTopic": describes the single route`},
		{"with streamName", with(base, KeyStreamName, "x", KeyRoutes, []any{route()}), `context "streamName": describes the single route`},
		{"unknown field", with(base, KeyRoutes, []any{route("partiton", "x")}), `context "routes[0] \"t\"": unknown field "partiton"`},
		{"no topic", with(base, KeyRoutes, []any{map[string]any{"streamName": "s", "name": "n"}}), `context "routes[0] \"n\"": topic: the NSQ topic of the route is required`},
		{"no stream", with(base, KeyRoutes, []any{map[string]any{"topic": "t"}}), `context "routes[0] \"t\"": streamName: the route's Kinesis stream name is required`},
		{"shared stream", with(base, KeyRoutes, []any{route(), route("topic", "u")}), `context "routes[1] \"u\"": streamName: "s" is also the stream of routes[0]`},
		{"same name", with(base, KeyRoutes, []any{route(), route("streamName", "s2", "channel", "c2")}), `context "routes[1] \"t\"": name: "t" is also the name of routes[0]`},
		{"same pair", with(base, KeyRoutes, []any{route(), route("name", "t2", "streamName", "s2")}), `context "routes[1] \"t2\"": channel: topic "t" channel "nsqk-kinesis": routes[0] reads it too`},
		{"same pair, one channel explicit", with(base, KeyRoutes, []any{route(), route("name", "t2", "streamName", "s2", "channel", "nsqk-kinesis")}),
			`context "routes[1] \"t2\"": channel: topic "t" channel "nsqk-kinesis": routes[0] reads it too`},
		{"ids collide", with(base, KeyRoutes, []any{route("name", "a-b"), route("name", "ab", "topic", "u", "streamName", "s2")}), `name: "ab" differs from routes[0]'s name only in punctuation`},
		{"bad shards", with(base, KeyRoutes, []any{route("shardCount", 0)}), `shardCount: 0 is out of range 1..10000`},
		{"shards on demand", with(base, KeyRoutes, []any{route("streamMode", "on-demand", "shardCount", 2)}), `shardCount: only valid with streamMode provisioned`},
		{"bad mode", with(base, KeyRoutes, []any{route("streamMode", "fast")}), `streamMode: "fast" is not a capacity mode`},
		{"retention", with(base, KeyRoutes, []any{route("retentionHours", 1)}), `retentionHours: 1 is out of range 24..8760`},
		{"ordering", with(base, KeyRoutes, []any{route("ordering", "loose")}), `ordering: "loose" is not strict or relaxed`},
		{"record keys", with(base, KeyRoutes, []any{route("recordKeys", "none")}), `recordKeys: "none" is not user or lane`},
		{"buffering", with(base, KeyRoutes, []any{route("maxBufferedTime", "1m")}), `maxBufferedTime: 1m0s is out of range 1ms..10s`},
		{"ephemeral channel", with(base, KeyRoutes, []any{route("channel", "c#ephemeral")}), `channel: "c#ephemeral" is ephemeral`},
		{"dead letters loop", with(base, KeyRoutes, []any{route("deadLetterTopic", "t")}), `deadLetterTopic: must differ from the route's topic`},
		{"consumer route unknown", with(base, KeyRoutes, []any{route()}, KeyConsumers, map[string]any{"monitor": map[string]any{"route": "x"}}),
			`context "consumers.monitor": route: "x" is not the name of a route in "routes" ("t")`},
		{"consumer route without routes", with(minimal(), KeyConsumers, map[string]any{"monitor": map[string]any{"route": "x"}}),
			`context "consumers.monitor": route: "x" names a route, but context "routes" is not set`},
		{"consumer age beyond its route's retention", with(base, KeyRoutes, []any{route(), route("name", "long", "topic", "u", "streamName", "s2", "retentionHours", 48)},
			KeyConsumers, map[string]any{"lastlocation": map[string]any{"maxRecordAge": "30h"}}),
			`context "consumers.lastlocation": maxRecordAge: 30h0m0s exceeds the stream retention of 24h`},
		{"groups without lookupd", with(map[string]any{KeyNsqdTCP: "nsqd:4150", KeyTopic: "t"}, KeyBridgeGroups, 2),
			`context "bridgeGroups": 2 groups split the nsqd nodes nsqlookupd lists: set "nsqLookupdHttpAddresses"`},
		{"groups with several tasks", with(minimal(), KeyBridgeGroups, 2, KeyBridgeMaxTasks, 2, KeyAcceptReordering, true),
			`context "bridgeGroups": 2 groups run one task each: bridgeMaxTasks=2`},
		{"groups zero", with(minimal(), KeyBridgeGroups, 0), `context "bridgeGroups": 0 is out of range 1..100`},
		{"partition in bridgeEnvironment", with(minimal(), KeyBridgeEnvironment, map[string]any{"NSQK_NSQD_PARTITION": "0/2"}),
			`NSQK_NSQD_PARTITION is managed by the stack: set bridgeGroups instead`},
		{"config in bridgeEnvironment", with(minimal(), KeyBridgeEnvironment, map[string]any{"NSQK_CONFIG_YAML": "routes: []"}),
			`NSQK_CONFIG_YAML is managed by the stack: set routes instead`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(MapContext(tc.ctx))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v\nwant it to contain %s", err, tc.want)
			}
		})
	}
	// Several tasks: refused while any route is strict (its own ordering, or the global one).
	relaxed := with(twoRoutes(), KeyBridgeMaxTasks, 2, KeyBridgeEnvironment, map[string]any{"NSQK_ORDERING": "relaxed"})
	if _, err := Parse(MapContext(relaxed)); err != nil {
		t.Errorf("every route relaxed, two tasks: %v", err)
	}
	strictRoute := with(relaxed, KeyRoutes, []any{map[string]any{"topic": "a", "streamName": "sa", "ordering": "strict"}})
	if _, err := Parse(MapContext(strictRoute)); err == nil || !strings.Contains(err.Error(), `context "bridgeMaxTasks": 2 tasks with strict ordering`) {
		t.Errorf("a strict route with two tasks: %v", err)
	}
	// A valid group count with lookupd.
	if c := parse(t, with(minimal(), KeyBridgeGroups, 3)); c.Bridge.Groups != 3 {
		t.Errorf("groups = %d", c.Bridge.Groups)
	}
}

// TestBridgeConfigYAML checks the rendered config against the bridge program's own route type:
// every field the stack writes is one the program reads.
func TestBridgeConfigYAML(t *testing.T) {
	y := parse(t, twoRoutes()).BridgeConfigYAML()
	want := `routes:
    - name: locations
      topic: locations
      stream: locations
      partition-key: user_id
    - name: orders
      topic: orders_v2
      channel: to-kinesis
      stream: orders
      key-buckets: 3
      ordering: relaxed
      dead-letter-topic: orders_failed
      max-buffered-time: 20ms
      record-keys: lane
`
	if y != want {
		t.Errorf("YAML:\n%s\nwant:\n%s", y, want)
	}
	var doc struct {
		Routes []bridgecmd.RouteConfig `yaml:"routes"`
	}
	dec := yaml.NewDecoder(strings.NewReader(y))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("the bridge program cannot read the rendered config: %v", err)
	}
	if r := doc.Routes[1]; r.Name != "orders" || r.Stream != "orders" || *r.KeyBuckets != 3 || *r.MaxBufferedTime != 20*time.Millisecond || r.RecordKeys != "lane" {
		t.Errorf("the bridge reads route 1 as %+v", r)
	}
	if y := parse(t, minimal()).BridgeConfigYAML(); y != "" {
		t.Errorf("without routes: %q", y)
	}
}
