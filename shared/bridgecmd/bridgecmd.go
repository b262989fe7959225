// Package bridgecmd is the bridge program (functions/bridge): flags and environment, logging,
// the AWS SDK client, the HTTP endpoints, CloudWatch EMF, signals and exit codes.
package bridgecmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime/debug"
	runtimepprof "runtime/pprof"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/peterbourgon/ff/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/nsqk/nsqk/shared/bridge"
	"github.com/nsqk/nsqk/shared/putrecords"
)

// EnvPrefix prefixes the environment variable of every flag: --max-in-flight is NSQK_MAX_IN_FLIGHT.
const EnvPrefix = "NSQK"

// Settings are the program-level flags (the bridge's own are in bridge.Options).
type Settings struct {
	Config         string
	ConfigYAML     string
	MetricsAddress string
	LogLevel       string
	CloudWatchEMF  bool
	Healthcheck    bool
	Pprof          bool
	CPUProfile     string
}

// FlagSet returns the program's flag set bound to o and s: every flag the bridge accepts.
func FlagSet(o *bridge.Options, s *Settings) *flag.FlagSet {
	fs := flag.NewFlagSet("nsqk-bridge", flag.ContinueOnError)
	bridgeFlags(fs, o)
	fs.StringVar(&s.Config, "config", "", "YAML file of global settings (named like the flags; flags and environment win) and a routes list: one bridge per route in this process (docs/routes.md)")
	fs.Var((*commaJoined)(&s.ConfigYAML), "config-yaml", "the --config file's content, for a platform that passes settings only as environment variables (instead of --config)")
	fs.StringVar(&s.MetricsAddress, "metrics-address", ":9090", "listen address of /metrics, /healthz and /readyz (empty = off)")
	fs.StringVar(&s.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&s.CloudWatchEMF, "cloudwatch-emf", false, "write CloudWatch Embedded Metric Format lines to stdout (namespace NSQK/Bridge)")
	fs.DurationVar(&o.EMFInterval, "emf-interval", o.EMFInterval, "how often EMF metrics are written")
	fs.BoolVar(&s.Pprof, "pprof", false, "also serve Go's /debug/pprof/ profiles on --metrics-address")
	fs.StringVar(&s.CPUProfile, "cpu-profile", "", "write a CPU profile (pprof) of the whole run to this file")
	fs.BoolVar(&s.Healthcheck, "healthcheck", false, "check /healthz of a bridge running on --metrics-address and exit 0 if healthy (container health check)")
	return fs
}

// Main runs the bridge program and returns its exit code: 0 after a clean shutdown, 1 on a
// runtime error, 2 on a usage error.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o := bridge.NewOptions()
	var s Settings
	fs := FlagSet(&o, &s)
	fs.SetOutput(stderr)
	var cf configFile
	if err := parseArgs(fs, &cf, &s, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "nsqk-bridge:", err)
		return 2
	}
	if s.Healthcheck {
		return healthcheck(s.MetricsAddress, stderr)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(s.LogLevel)); err != nil {
		fmt.Fprintln(stderr, "nsqk-bridge: --log-level:", err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	if s.CloudWatchEMF {
		o.EMFOutput = stdout
	}
	routes, err := buildRoutes(o, cf.routes)
	if err != nil {
		fmt.Fprintln(stderr, "nsqk-bridge:", err)
		return 2
	}
	if os.Getenv("GOGC") == "" {
		// Besides its two memories the live heap is small (about 10 MB at the default
		// --max-in-flight) and churns fast; the default GOGC=100 spends ~15 % of the bridge's CPU
		// collecting it. 300 buys most of that back: in make bench, 400 cost no less CPU but ~12 MB
		// more peak RSS. GOGC and GOMEMLIMIT in the environment still win.
		debug.SetGCPercent(300)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// GOGC=300 alone would let the heap grow to 4x the live heap, and the memories of keys
		// and written messages make the live heap up to their budgets: a soft limit keeps the
		// process within the budgets plus a working allowance (GC runs more often near it).
		debug.SetMemoryLimit(memoryLimit(routes))
	}
	if s.CPUProfile != "" {
		f, err := os.Create(s.CPUProfile)
		if err == nil {
			err = runtimepprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(stderr, "nsqk-bridge: --cpu-profile:", err)
			return 2
		}
		defer func() {
			runtimepprof.StopCPUProfile()
			f.Close()
		}()
	}

	conns := 0
	for _, r := range routes {
		conns += r.o.MaxRequestsInFlight
	}
	kc, err := KinesisClient(ctx, conns)
	if err != nil {
		log.Error("AWS configuration", "err", err)
		return 1
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	g, err := newGroup(routes, kc, log, reg)
	if err != nil {
		fmt.Fprintln(stderr, "nsqk-bridge:", err)
		return 2
	}
	if s.MetricsAddress != "" {
		ln, err := net.Listen("tcp", s.MetricsAddress)
		if err != nil {
			log.Error("metrics listener", "err", err)
			return 1
		}
		h := g.handler(reg)
		if s.Pprof {
			mux := http.NewServeMux()
			mux.Handle("/", h)
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
			h = mux
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
	}
	if err := g.run(ctx, log); err != nil {
		log.Error("bridge stopped with an error", "err", err)
		return 1
	}
	return 0
}

// commaJoined is a string flag that survives the comma splitting of environment values (YAML
// has commas): the parts are set one by one and joined again.
type commaJoined string

func (c *commaJoined) String() string { return string(*c) }
func (c *commaJoined) Set(v string) error {
	if *c != "" {
		*c += ","
	}
	*c += commaJoined(v)
	return nil
}

// parseArgs sets fs from args, then the environment, then the --config file or --config-yaml
// (each only where the ones before left a flag unset); the file's routes go to cf.
func parseArgs(fs *flag.FlagSet, cf *configFile, s *Settings, args []string) error {
	err := ff.Parse(fs, args, ff.WithEnvVarPrefix(EnvPrefix), ff.WithEnvVarSplit(","),
		ff.WithConfigFileFlag("config"), ff.WithConfigFileParser(cf.parser(fs)))
	if err != nil || s.ConfigYAML == "" {
		return err
	}
	if s.Config != "" {
		return errors.New("use --config or --config-yaml, not both")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return cf.parser(fs)(strings.NewReader(s.ConfigYAML), func(name, value string) error {
		if set[name] {
			return nil // a flag or the environment set it
		}
		return fs.Set(name, value)
	})
}

// WorkingMemoryMiB is what the bridge program allows itself beyond the budgets of its two
// memories (--late-window-memory-mib, --written-memory-mib): the Go runtime, the held messages
// and their aggregates, and the garbage between collections.
const WorkingMemoryMiB = 256

// MemoryLimit is the Go soft memory limit the bridge program sets when GOMEMLIMIT is not set.
func MemoryLimit(o *bridge.Options) int64 {
	return int64(o.LateWindowMemoryMiB+o.WrittenMemoryMiB+WorkingMemoryMiB) << 20
}

// memoryLimit is MemoryLimit for several routes: each has its own two memories.
func memoryLimit(routes []route) int64 {
	mib := WorkingMemoryMiB
	for _, r := range routes {
		mib += r.o.LateWindowMemoryMiB + r.o.WrittenMemoryMiB
	}
	return int64(mib) << 20
}

// KinesisClient builds the SDK client from the standard chain (AWS_REGION,
// AWS_ENDPOINT_URL_KINESIS, credentials, AWS_MAX_ATTEMPTS). The retry quota (client-side rate
// limiter) is off: the bridge never gives up on a record, so a quota that fails requests early
// would only add error handling, not safety; backoff still applies.
func KinesisClient(ctx context.Context, conns int) (*kinesis.Client, error) {
	cfg, err := config.LoadDefaultConfig(ctx,
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(so *retry.StandardOptions) { so.RateLimiter = ratelimit.None })
		}),
		config.WithHTTPClient(awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
			t.MaxIdleConnsPerHost = max(conns, 16) * 2
		})))
	if err != nil {
		return nil, err
	}
	// PutRecords bodies are encoded in one pass into a buffer of their exact size (shared/putrecords);
	// signing, retries and transport stay the SDK's.
	return kinesis.NewFromConfig(cfg, putrecords.WithEncoder), nil
}

func healthcheck(addr string, stderr io.Writer) int {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		fmt.Fprintln(stderr, "healthcheck:", err)
		return 1
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort(host, port) + "/healthz")
	if err != nil {
		fmt.Fprintln(stderr, "healthcheck:", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(stderr, "healthcheck:", resp.Status)
		return 1
	}
	return 0
}
