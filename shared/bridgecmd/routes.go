package bridgecmd

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nsqk/nsqk/shared/bridge"
)

// group is the program's bridges, one per route, sharing one process, one Kinesis client, one
// metrics registry (every series labelled with its route) and one HTTP server.
type group struct {
	names   []string
	bridges []*bridge.Bridge
	probes  []http.Handler // each bridge's own endpoints, asked for /healthz and /readyz
}

func newGroup(routes []route, kc bridge.Kinesis, log *slog.Logger, reg *prometheus.Registry) (*group, error) {
	g := &group{}
	for _, r := range routes {
		rreg := prometheus.WrapRegistererWith(prometheus.Labels{"route": r.name}, reg)
		b, err := bridge.New(r.o, kc, log.With("route", r.name), rreg)
		if err != nil {
			if len(routes) > 1 {
				err = fmt.Errorf("route %q: %w", r.name, err)
			}
			return nil, err
		}
		g.names = append(g.names, r.name)
		g.bridges = append(g.bridges, b)
		g.probes = append(g.probes, b.Handler(reg))
	}
	return g, nil
}

// run runs every bridge until ctx ends or one of them stops with an error; then the others shut
// down gracefully too (the process is restarted as a whole). It returns the first error.
func (g *group) run(ctx context.Context, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var first error // the failure that stopped the others
	var wg sync.WaitGroup
	for i, b := range g.bridges {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := b.Run(ctx)
			if err == nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case len(g.bridges) == 1:
				first = err
			case first == nil:
				first = fmt.Errorf("route %q: %w", g.names[i], err)
				log.Error("route stopped with an error: stopping the other routes", "route", g.names[i], "err", err)
			default:
				log.Warn("route stopped with an error after another route failed", "route", g.names[i], "err", err)
			}
			cancel()
		}()
	}
	wg.Wait()
	return first
}

// handler serves /metrics from reg, and /healthz and /readyz healthy or ready only when every
// route's bridge says so; an unhealthy answer lists the routes that are not.
func (g *group) handler(reg prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	for _, path := range []string{"/healthz", "/readyz"} {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			var failed bytes.Buffer
			var ok []byte
			for i, p := range g.probes {
				c := &capture{header: http.Header{}, code: http.StatusOK}
				p.ServeHTTP(c, r)
				if c.code != http.StatusOK {
					if len(g.probes) > 1 {
						fmt.Fprintf(&failed, "route %s: ", g.names[i])
					}
					failed.Write(bytes.TrimRight(c.body.Bytes(), "\n"))
					failed.WriteByte('\n')
				} else {
					ok = c.body.Bytes()
				}
			}
			if failed.Len() > 0 {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write(failed.Bytes())
				return
			}
			w.Write(ok)
		})
	}
	return mux
}

// capture records the answer of one route's own /healthz or /readyz.
type capture struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (c *capture) Header() http.Header         { return c.header }
func (c *capture) WriteHeader(code int)        { c.code = code }
func (c *capture) Write(p []byte) (int, error) { return c.body.Write(p) }
