package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nsqk/nsqk/shared/local/emfread"
	"github.com/nsqk/nsqk/shared/local/esm"
	"github.com/nsqk/nsqk/shared/local/lambdart"
)

// builtInConsumers run in-process in `nsqk dev`; bridge is not a Lambda function.
var builtInConsumers = map[string]bool{"bridge": true, "monitor": true, "lastlocation": true}

// ownConsumer is a team's consumer, functions/<name>/main.go, run by `nsqk dev` as Lambda runs
// it: its own executable, one process per function instance, behind a local Runtime API.
type ownConsumer struct {
	name     string // directory name
	dir      string // package directory
	binary   string
	function string // function name, as the stack names it
	dlq      string // dead-letter queue URL
	rt       *lambdart.Runtime
	m        *esm.Mapping
	stdout   string // EMF lines
	stderr   string // logs
	emf      *emfread.Summary
}

// findConsumers lists the consumer packages under dir (each subdirectory with a main.go, built-ins
// excepted), restricted to pick: "all", "none" or a comma-separated list of names.
func findConsumers(dir, pick string) ([]string, error) {
	matches, err := filepath.Glob(filepath.Join(dir, "*", "main.go"))
	if err != nil {
		return nil, err
	}
	found := map[string]bool{}
	var names []string
	for _, m := range matches {
		name := filepath.Base(filepath.Dir(m))
		if !builtInConsumers[name] {
			found[name] = true
			names = append(names, name)
		}
	}
	sort.Strings(names)
	switch pick {
	case "all":
		return names, nil
	case "none", "":
		return nil, nil
	}
	var picked []string
	for _, name := range strings.Split(pick, ",") {
		name = strings.TrimSpace(name)
		switch {
		case builtInConsumers[name]:
			return nil, fmt.Errorf("--consumers %s: monitor and lastlocation always run (in-process); name only your own consumers", name)
		case !found[name]:
			return nil, fmt.Errorf("--consumers %s: no %s", name, filepath.Join(dir, name, "main.go"))
		}
		picked = append(picked, name)
	}
	return picked, nil
}

// buildConsumers compiles each consumer into dir/bin/<name>.
func buildConsumers(ctx context.Context, functionsDir, dir string, names []string) ([]*ownConsumer, error) {
	var own []*ownConsumer
	for _, name := range names {
		c := &ownConsumer{name: name, dir: filepath.Join(functionsDir, name), binary: filepath.Join(dir, "bin", name),
			function: "nsqk-" + name, stdout: filepath.Join(dir, name+"-metrics.jsonl"), stderr: filepath.Join(dir, name+".log")}
		if err := lambdart.Build(ctx, c.dir, c.binary); err != nil {
			return nil, err
		}
		own = append(own, c)
	}
	return own, nil
}

// start runs c behind its own mapping: env is its configuration (the stand-ins' endpoints, its
// checkpoint table and dead-letter queue).
func (c *ownConsumer) start(d *devConsumers, base esm.Config, dir string, env []string) error {
	stdout, err := os.Create(c.stdout)
	if err != nil {
		return err
	}
	d.closers = append(d.closers, stdout)
	stderr, err := os.Create(c.stderr)
	if err != nil {
		return err
	}
	d.closers = append(d.closers, stderr)
	c.emf = &emfread.Summary{}
	if c.rt, err = lambdart.New(lambdart.Function{Name: c.function, Binary: c.binary, Env: env, MemoryMB: 256,
		Stdout: &emfread.LineWriter{Summary: c.emf, Next: stdout}, Stderr: stderr}); err != nil {
		return err
	}
	d.closers = append(d.closers, c.rt) // closed before its files
	cfg := base
	cfg.FunctionName, cfg.OnFailure = c.function, filepath.Join(dir, c.name+"-on-failure.jsonl")
	c.m = esm.New(d.kc, c.rt.NewInstance, cfg)
	return nil
}

// ownNames lists the consumers, for the start-up line.
func ownNames(own []*ownConsumer) string {
	var b strings.Builder
	for _, c := range own {
		fmt.Fprintf(&b, ", %s (%s, own process per instance through a local Lambda Runtime API; logs %s)", c.name, c.dir, c.stderr)
	}
	return b.String()
}

// ownResult is what an own consumer did, for the summary and the test.
type ownResult struct {
	Invocations, RecordsDone, OnFailure, DeadLettered int64
	Processes, Crashes, Timeouts                      int64
	UserRecords                                       int64 // its EMF metric Records, 0 if it emits none
}

// userRecords is the sum of the consumer's Records metric (user records processed), as
// shared/consumer's processor emits it.
func (c *ownConsumer) userRecords() int64 {
	v, _ := c.emf.Get("Records")
	return int64(v.Sum)
}

func (d *devConsumers) ownResults(ctx context.Context) (map[string]ownResult, error) {
	res := map[string]ownResult{}
	var errs []error
	for _, c := range d.own {
		s, rs := c.m.Stats(), c.rt.Stats()
		n, err := d.deadLettered(ctx, c.function)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: dead-letter queue: %w", c.name, err))
			n = -1
		}
		res[c.name] = ownResult{Invocations: s.Invocations, RecordsDone: s.RecordsDone, OnFailure: s.OnFailureRecords,
			DeadLettered: n, Processes: rs.Processes, Crashes: rs.Crashes, Timeouts: rs.Timeouts, UserRecords: c.userRecords()}
	}
	return res, errors.Join(errs...)
}
