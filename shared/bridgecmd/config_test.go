package bridgecmd

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nsqk/nsqk/shared/bridge"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bridge.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Each bad config is a usage error (exit 2) whose message names the route and the field.
func TestConfigErrorsNameRouteAndField(t *testing.T) {
	for _, c := range []struct{ name, config, want string }{
		{"unknown route field", `
nsqd-tcp-address: 127.0.0.1:4150
routes:
  - topic: orders
    stream: s1
    partiton-key: id
`, `routes[0] "orders" (line 6): unknown field "partiton-key"`},
		{"unknown setting", `
nsqd-tcp-adress: 127.0.0.1:4150
`, `line 2: unknown field "nsqd-tcp-adress"`},
		{"duplicate topic and channel", `
nsqd-tcp-address: 127.0.0.1:4150
routes:
  - {name: a, topic: orders, stream: s1}
  - {name: b, topic: orders, channel: nsqk, stream: s2}
`, `routes[1] "b": topic "orders" channel "nsqk": routes[0] reads it too`},
		{"same topic, default names", `
nsqd-tcp-address: 127.0.0.1:4150
routes:
  - {topic: orders, stream: s1}
  - {topic: orders, channel: audit, stream: s2}
`, `routes[1] "orders": name: routes[0] is also named "orders" (a route is named after its topic unless it sets name)`},
		{"different keys into one stream", `
nsqd-tcp-address: 127.0.0.1:4150
routes:
  - {topic: orders, stream: s1, partition-key: user_id}
  - {topic: clicks, stream: s1, partition-key: session.id, share-stream: true}
`, `routes[1] "clicks": partition-key "session.id": stream "s1" is also written by routes[0] with partition-key "user_id"; set share-stream: true on both routes`},
		{"missing stream", `
nsqd-tcp-address: 127.0.0.1:4150
routes:
  - {topic: orders}
`, `routes[0] "orders": stream is required`},
		{"bad field value", `
nsqd-tcp-address: 127.0.0.1:4150
routes:
  - {topic: orders, stream: s1, key-buckets: 0}
`, `routes[0] "orders": key-buckets must be 1..10000`},
		{"bad type", `
nsqd-tcp-address: 127.0.0.1:4150
routes:
  - {topic: orders, stream: s1, max-buffered-time: soon}
`, `routes[0] "orders": yaml: unmarshal errors:`},
		{"global setting, said once", `
routes:
  - {topic: orders, stream: s1}
  - {topic: clicks, stream: s2, missing-key: fixed}
`, "nsqk-bridge: one of --nsqd-tcp-address or --lookupd-http-address is required\n" +
			`routes[1] "clicks": missing-key=fixed needs a usable fixed-key`},
		{"single-route flag with routes", `
nsqd-tcp-address: 127.0.0.1:4150
topic: orders
routes:
  - {topic: orders, stream: s1}
`, `--topic, --stream and --dead-letter-topic describe a single route`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Main(context.Background(), []string{"--config", writeConfig(t, c.config)}, &out, &errb)
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr: %s", code, errb.String())
			}
			if !strings.Contains(errb.String(), c.want) {
				t.Fatalf("stderr lacks %q:\n%s", c.want, errb.String())
			}
		})
	}
}

// Settings in the file apply where neither a flag nor the environment set them; each route
// starts from the global settings and overrides its own fields.
func TestConfigSettingsAndRoutePrecedence(t *testing.T) {
	p := writeConfig(t, `
lookupd-http-address: [127.0.0.1:4161, 127.0.0.1:4261]
max-in-flight: 100
partition-key: user_id
key-buckets: 3
routes:
  - topic: orders
    stream: s1
    max-buffered-time: 40ms
    dead-letter-topic: orders_bad
  - name: clicks-relaxed
    topic: clicks
    channel: kin
    stream: arn:aws:kinesis:us-east-1:123456789012:stream/s2
    partition-key: session.id
    key-buckets: 8
    ordering: relaxed
    record-keys: lane
    missing-key: fixed
    fixed-key: none
`)
	t.Setenv("NSQK_MAX_IN_FLIGHT", "300")
	o := bridge.NewOptions()
	var s Settings
	fs := FlagSet(&o, &s)
	var cf configFile
	if err := parseArgs(fs, &cf, &s, []string{"--config", p, "--key-buckets", "2"}); err != nil {
		t.Fatal(err)
	}
	routes, err := buildRoutes(o, cf.routes)
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 2 {
		t.Fatalf("%d routes", len(routes))
	}
	a, b := routes[0], routes[1]
	if a.name != "orders" || a.o.Route != "orders" || b.name != "clicks-relaxed" {
		t.Fatalf("names %q %q", a.name, b.name)
	}
	if got := a.o.LookupdHTTPAddresses; len(got) != 2 || got[1] != "127.0.0.1:4261" {
		t.Fatalf("lookupd addresses %v", got)
	}
	if a.o.MaxInFlight != 300 || b.o.MaxInFlight != 300 {
		t.Fatalf("max-in-flight %d/%d: the environment must win over the file", a.o.MaxInFlight, b.o.MaxInFlight)
	}
	if a.o.KeyBuckets != 2 || b.o.KeyBuckets != 8 {
		t.Fatalf("key buckets %d/%d: the flag wins over the file's setting, a route's own field over both", a.o.KeyBuckets, b.o.KeyBuckets)
	}
	if a.o.Channel != "nsqk" || a.o.MaxBufferedTime.Milliseconds() != 40 || a.o.DeadLetterTopic != "orders_bad" || a.o.PartitionKey != "user_id" || a.o.Ordering != bridge.Strict {
		t.Fatalf("route orders: %+v", a.o)
	}
	if b.o.Channel != "kin" || b.o.PartitionKey != "session.id" || b.o.Ordering != bridge.Relaxed || b.o.RecordKeys != bridge.RecordKeysLane ||
		b.o.MissingKey != bridge.MissingKeyFixed || b.o.FixedKey != "none" || b.o.DeadLetterTopic != "clicks_dead" || b.o.MaxBufferedTime != bridge.NewOptions().MaxBufferedTime {
		t.Fatalf("route clicks-relaxed: %+v", b.o)
	}
}

// --config-yaml carries the file's content (from an environment variable, as a container
// platform passes it); flags and other variables still win.
func TestConfigYAMLFromEnvironment(t *testing.T) {
	t.Setenv("NSQK_CONFIG_YAML", "lookupd-http-address: 127.0.0.1:4161\nmax-in-flight: 100\nroutes:\n  - {topic: a, stream: s1}\n  - {topic: b, stream: s2, key-buckets: 4}\n")
	t.Setenv("NSQK_MAX_IN_FLIGHT", "300")
	o := bridge.NewOptions()
	var s Settings
	fs := FlagSet(&o, &s)
	var cf configFile
	if err := parseArgs(fs, &cf, &s, []string{"--channel", "kin"}); err != nil {
		t.Fatal(err)
	}
	routes, err := buildRoutes(o, cf.routes)
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 2 || routes[1].o.KeyBuckets != 4 || routes[0].o.MaxInFlight != 300 || routes[0].o.Channel != "kin" ||
		len(routes[0].o.LookupdHTTPAddresses) != 1 {
		t.Fatalf("%+v", routes)
	}
	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"--config", writeConfig(t, "")}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "use --config or --config-yaml, not both") {
		t.Fatalf("both: exit %d: %s", code, errb.String())
	}
}
