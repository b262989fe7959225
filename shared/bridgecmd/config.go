package bridgecmd

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3"
	"go.yaml.in/yaml/v3"

	"github.com/nsqk/nsqk/shared/bridge"
)

// RouteConfig is one entry of the config file's routes list. Each field overrides, for this
// route, the setting of the flag of the same name; a field left out takes the global setting.
type RouteConfig struct {
	// Name labels the route's metrics (Prometheus label route, EMF dimension Route) and logs;
	// default the topic.
	Name            string         `yaml:"name"`
	Topic           string         `yaml:"topic"`
	Channel         string         `yaml:"channel"`
	Stream          string         `yaml:"stream"`
	PartitionKey    string         `yaml:"partition-key"`
	MissingKey      string         `yaml:"missing-key"`
	FixedKey        string         `yaml:"fixed-key"`
	KeyBuckets      *int           `yaml:"key-buckets"`
	Ordering        string         `yaml:"ordering"`
	DeadLetterTopic string         `yaml:"dead-letter-topic"`
	MaxBufferedTime *time.Duration `yaml:"max-buffered-time"`
	RecordKeys      string         `yaml:"record-keys"`
	// ShareStream allows routes with different partition keys into one stream (each key's
	// records stay in order, but a stream's consumers then see keys of different meanings).
	ShareStream bool `yaml:"share-stream"`
}

// configFile reads the --config file: top-level fields are global settings named like the flags
// (set only where neither a flag nor the environment set them), plus the routes list.
type configFile struct {
	routes []RouteConfig
	lines  []int // the line of each route, for errors
}

// parser returns the ff config file parser that fills c.routes and passes settings to set.
func (c *configFile) parser(fs *flag.FlagSet) ff.ConfigFileParser {
	return func(r io.Reader, set func(name, value string) error) error {
		if err := c.parse(r, fs, set); err != nil {
			return fmt.Errorf("--config: %w", err)
		}
		return nil
	}
}

func (c *configFile) parse(r io.Reader, fs *flag.FlagSet, set func(name, value string) error) error {
	var root yaml.Node
	if err := yaml.NewDecoder(r).Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file
		}
		return err
	}
	doc := root.Content[0]
	if doc.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: want a mapping of settings and routes", doc.Line)
	}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		k, v := doc.Content[i], doc.Content[i+1]
		switch {
		case k.Value == "routes":
			if err := c.parseRoutes(v); err != nil {
				return err
			}
		case k.Value == "config" || fs.Lookup(k.Value) == nil:
			return fmt.Errorf("line %d: unknown field %q (a setting is named like its flag, without the dashes in front; routes go under routes)", k.Line, k.Value)
		default:
			if err := setValues(k.Value, v, set); err != nil {
				return fmt.Errorf("line %d: %s: %w", v.Line, k.Value, err)
			}
		}
	}
	return nil
}

// setValues sets a flag from a scalar, or from each element of a list (repeatable flags).
func setValues(name string, v *yaml.Node, set func(name, value string) error) error {
	var vals []*yaml.Node
	switch v.Kind {
	case yaml.ScalarNode:
		vals = []*yaml.Node{v}
	case yaml.SequenceNode:
		vals = v.Content
	default:
		return errors.New("want a value or a list of values")
	}
	for _, s := range vals {
		if s.Kind != yaml.ScalarNode || s.Tag == "!!null" {
			return errors.New("want a value or a list of values")
		}
		if err := set(name, s.Value); err != nil {
			return err
		}
	}
	return nil
}

// routeFields are the field names a route accepts (RouteConfig's yaml tags).
var routeFields = func() map[string]bool {
	m := map[string]bool{}
	t := reflect.TypeFor[RouteConfig]()
	for i := range t.NumField() {
		m[t.Field(i).Tag.Get("yaml")] = true
	}
	return m
}()

func (c *configFile) parseRoutes(v *yaml.Node) error {
	if v.Kind != yaml.SequenceNode {
		return fmt.Errorf("line %d: routes: want a list", v.Line)
	}
	for i, n := range v.Content {
		if n.Kind != yaml.MappingNode {
			return fmt.Errorf("routes[%d] (line %d): want a mapping of route fields", i, n.Line)
		}
		for j := 0; j+1 < len(n.Content); j += 2 {
			if k := n.Content[j]; !routeFields[k.Value] {
				return fmt.Errorf("%s (line %d): unknown field %q", routeLabel(i, n), k.Line, k.Value)
			}
		}
		var rc RouteConfig
		if err := n.Decode(&rc); err != nil {
			return fmt.Errorf("%s: %w", routeLabel(i, n), err)
		}
		c.routes = append(c.routes, rc)
		c.lines = append(c.lines, n.Line)
	}
	return nil
}

// routeLabel names route i in an error: its index and, when it has one, its name or topic.
func routeLabel(i int, n *yaml.Node) string {
	var id struct {
		Name  string `yaml:"name"`
		Topic string `yaml:"topic"`
	}
	n.Decode(&id)
	return label(i, cmpOr(id.Name, id.Topic))
}

func label(i int, name string) string {
	if name == "" {
		return fmt.Sprintf("routes[%d]", i)
	}
	return fmt.Sprintf("routes[%d] %q", i, name)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// route is one bridge of the program.
type route struct {
	name string
	o    bridge.Options
}

// buildRoutes returns the program's routes: each route of the config file over the global
// options, or, without routes in the file, one route of the global options alone (named after
// its topic). Every error names the route and the field.
func buildRoutes(global bridge.Options, cfg []RouteConfig) ([]route, error) {
	if len(cfg) == 0 {
		o := global
		if err := o.Validate(); err != nil {
			return nil, err
		}
		return []route{{name: o.Topic, o: o}}, nil
	}
	if global.Topic != "" || global.Stream != "" || global.DeadLetterTopic != "" {
		return nil, errors.New("--topic, --stream and --dead-letter-topic describe a single route: with routes in --config each route sets its own")
	}
	var errs []error
	bad := func(i int, name, f string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", label(i, name), fmt.Sprintf(f, a...)))
	}
	var routes []route
	names := map[string]int{}
	pairs := map[[2]string]int{}
	said := map[string]bool{}
	for i, rc := range cfg {
		o := global
		name := cmpOr(rc.Name, rc.Topic)
		if rc.Topic == "" {
			bad(i, name, "topic is required")
		}
		if rc.Stream == "" {
			bad(i, name, "stream is required")
		}
		o.Topic, o.Stream, o.DeadLetterTopic = rc.Topic, rc.Stream, rc.DeadLetterTopic
		o.Channel = cmpOr(rc.Channel, o.Channel)
		o.PartitionKey = cmpOr(rc.PartitionKey, o.PartitionKey)
		o.MissingKey = bridge.MissingKeyPolicy(cmpOr(rc.MissingKey, string(o.MissingKey)))
		o.FixedKey = cmpOr(rc.FixedKey, o.FixedKey)
		o.Ordering = bridge.Ordering(cmpOr(rc.Ordering, string(o.Ordering)))
		o.RecordKeys = bridge.RecordKeys(cmpOr(rc.RecordKeys, string(o.RecordKeys)))
		if rc.KeyBuckets != nil {
			o.KeyBuckets = *rc.KeyBuckets
		}
		if rc.MaxBufferedTime != nil {
			o.MaxBufferedTime = *rc.MaxBufferedTime
		}
		o.Route = name
		if name != "" {
			if j, dup := names[name]; dup {
				if rc.Name == "" {
					bad(i, name, "name: routes[%d] is also named %q (a route is named after its topic unless it sets name): give each a distinct name", j, name)
				} else {
					bad(i, name, "name: routes[%d] is also named %q", j, name)
				}
			}
			names[name] = i
		}
		if rc.Topic != "" {
			pair := [2]string{o.Topic, o.Channel}
			if j, dup := pairs[pair]; dup {
				bad(i, name, "topic %q channel %q: routes[%d] reads it too; each topic/channel pair may be read by one route only", o.Topic, o.Channel, j)
			}
			pairs[pair] = i
		}
		if err := o.Validate(); err != nil && rc.Topic != "" && rc.Stream != "" {
			for _, e := range unjoin(err) {
				if msg, ok := routeFieldError(e.Error()); ok {
					bad(i, name, "%s", msg)
				} else if !said[msg] { // about global settings: said once
					said[msg] = true
					errs = append(errs, e)
				}
			}
		}
		routes = append(routes, route{name: name, o: o})
	}
	// Routes into one stream must agree on what its partition key means, unless every one of
	// them says it shares the stream knowingly.
	for i := range routes {
		for j := range i {
			a, b := &routes[j].o, &routes[i].o
			if streamKey(a.Stream) != streamKey(b.Stream) || a.Stream == "" || a.PartitionKey == b.PartitionKey {
				continue
			}
			if !cfg[i].ShareStream || !cfg[j].ShareStream {
				bad(i, routes[i].name, "partition-key %q: stream %q is also written by routes[%d] with partition-key %q; set share-stream: true on both routes to allow it",
					b.PartitionKey, streamKey(b.Stream), j, a.PartitionKey)
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return routes, nil
}

var flagRef = regexp.MustCompile(`--([a-z][a-z-]*)`)

// routeFieldError rewrites a validation message about route fields in their names ("--key-buckets
// must be ..." becomes "key-buckets must be ..."); ok is false for a message about global settings
// only.
func routeFieldError(msg string) (string, bool) {
	ok := false
	out := flagRef.ReplaceAllStringFunc(msg, func(ref string) string {
		if routeFields[ref[2:]] {
			ok = true
			return ref[2:]
		}
		return ref
	})
	return out, ok
}

// streamKey is a stream's name, whether given by name or ARN.
func streamKey(s string) string {
	if i := strings.LastIndex(s, ":stream/"); i >= 0 {
		return s[i+len(":stream/"):]
	}
	return s
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
