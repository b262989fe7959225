package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nsqio/go-nsq"

	"github.com/nsqk/nsqk/cmd/nsqk/internal/promq"
	"github.com/nsqk/nsqk/shared/bridge"
	"github.com/nsqk/nsqk/shared/bridgecmd"
	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/nsqlocal"
)

// devRoutesResult is what a routes-and-groups dev run did, for its test.
type devRoutesResult struct {
	Published, Written, Duplicates, Missing, OrderViolations int64
	// Readers counts, per node and topic, the bridge connections nsqd saw on the channel.
	Readers map[string]int
	// Owned lists the nodes each group read (by its partition).
	Owned [][]string
}

// devMsg is a message of the routes demo: its node and a sequence number per node and user.
type devMsg struct {
	UserID string `json:"user_id"`
	Node   int    `json:"node"`
	Seq    int    `json:"seq"`
}

// runDevRoutes shows routes and bridge groups: an embedded nsqlookupd with several embedded nsqd
// nodes, one topic and one stream per route, and o.groups bridge programs (each with a --config
// of every route and its own --nsqd-partition) in this process.
func runDevRoutes(ctx context.Context, o devOptions, out io.Writer) (res devRoutesResult, _ error) {
	start := time.Now()
	say := func(format string, a ...any) {
		fmt.Fprintf(out, "[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, a...))
	}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return res, err
	}
	nlog := slog.New(slog.DiscardHandler)
	l, err := nsqlocal.StartLookupd(nlog)
	if err != nil {
		return res, err
	}
	defer l.Stop()
	var nodes []*nsqlocal.NSQD
	defer func() {
		for _, n := range nodes {
			n.Stop()
		}
	}()
	for range max(o.nodes, 1) {
		// Disk only: each node delivers in publish order, so the read-back can check it.
		n, err := nsqlocal.Start(nsqlocal.Options{DiskOnly: true, LookupdTCPAddresses: []string{l.TCPAddr}, Logger: nlog})
		if err != nil {
			return res, err
		}
		nodes = append(nodes, n)
	}
	var addrs []string
	for i, n := range nodes {
		addrs = append(addrs, fmt.Sprintf("n%d tcp://%s http://%s", i, n.TCPAddr, n.HTTPAddr))
	}
	say("nsqlookupd on http://%s; nsqd nodes registered with it: %s", l.HTTPAddr, strings.Join(addrs, ", "))

	em, err := kinesislocal.Start(ctx, kinesislocal.Options{Kind: kinesislocal.Kind(o.emulator)})
	if err != nil {
		return res, err
	}
	defer em.Close()
	kc := em.Client()
	var topics, streams []string
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "lookupd-http-address: %s\nmax-buffered-time: %s\nkey-buckets: %d\nconsumer-opt: lookupd_poll_interval=1s\nroutes:\n", l.HTTPAddr, o.maxBuffered, o.keyBuckets)
	for r := range max(o.routes, 1) {
		topic, stream := fmt.Sprintf("locations-%d", r), fmt.Sprintf("nsqk-dev-%d", r)
		if err := kinesislocal.CreateStream(ctx, kc, stream, int32(o.shards)); err != nil {
			return res, err
		}
		topics, streams = append(topics, topic), append(streams, stream)
		fmt.Fprintf(&cfg, "  - topic: %s\n    stream: %s\n", topic, stream)
	}
	config := filepath.Join(o.dir, "routes.yaml")
	if err := os.WriteFile(config, []byte(cfg.String()), 0o644); err != nil {
		return res, err
	}
	say("%s on %s: streams %s with %d shards each; bridge config %s", o.emulator, em.Endpoint, strings.Join(streams, ", "), o.shards, config)
	prods := make([]*nsq.Producer, len(nodes))
	for i, n := range nodes {
		if prods[i], err = nsq.NewProducer(n.TCPAddr, nsq.NewConfig()); err != nil {
			return res, err
		}
		prods[i].SetLogger(nil, nsq.LogLevelError)
		defer prods[i].Stop()
	}

	// The bridge programs read AWS settings from the environment, as in a container.
	restore := setEnv(map[string]string{"AWS_ENDPOINT_URL_KINESIS": em.Endpoint, "AWS_REGION": "us-east-1",
		"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_EC2_METADATA_DISABLED": "true"})
	defer restore()
	groups := max(o.groups, 1)
	bctx, stopBridges := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBridges()
	metrics := make([]string, groups)
	codes := make(chan int, groups)
	res.Owned = make([][]string, groups)
	for g := range groups {
		port, err := kinesislocal.FreePort()
		if err != nil {
			return res, err
		}
		metrics[g] = fmt.Sprintf("127.0.0.1:%d", port)
		logf, err := os.Create(filepath.Join(o.dir, fmt.Sprintf("bridge-%d.log", g)))
		if err != nil {
			return res, err
		}
		defer logf.Close()
		part := fmt.Sprintf("%d/%d", g, groups)
		args := []string{"--config", config, "--nsqd-partition", part, "--metrics-address", metrics[g]}
		go func() { codes <- bridgecmd.Main(bctx, args, io.Discard, logf) }()
		p, _ := bridge.ParsePartition(part)
		for i, n := range nodes {
			if p.Owns(n.TCPAddr) {
				res.Owned[g] = append(res.Owned[g], fmt.Sprintf("n%d", i))
			}
		}
		say("bridge group %s (metrics http://%s/metrics, log %s) reads nodes %v", part, metrics[g], logf.Name(), res.Owned[g])
	}

	var mu sync.Mutex
	seqs := map[string]int{} // topic/node/user -> next seq
	publishBatch := func(n int) error {
		for t, topic := range topics {
			for i, p := range prods {
				var bodies [][]byte
				for k := range n {
					user := fmt.Sprintf("u%d", (k*7+i+t)%max(o.users, 1))
					id := fmt.Sprintf("%s/%d/%s", topic, i, user)
					mu.Lock()
					s := seqs[id]
					seqs[id]++
					mu.Unlock()
					b, _ := json.Marshal(devMsg{UserID: user, Node: i, Seq: s})
					bodies = append(bodies, b)
				}
				if err := p.MultiPublish(topic, bodies); err != nil {
					return err
				}
				res.Published += int64(len(bodies))
			}
		}
		return nil
	}
	perTick := max(1, o.rate/10/len(topics)/len(nodes))
	say("publishing ~%d messages/s spread over %d topics and %d nodes for %s", perTick*10*len(topics)*len(nodes), len(topics), len(nodes), durationText(o.duration))
	acked := func() float64 {
		var sum float64
		for _, m := range metrics {
			f, err := promq.Scrape(ctx, "http://"+m+"/metrics")
			if err == nil {
				sum += f.Value("nsqk_bridge_messages_acked_total")
			}
		}
		return sum
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	status := time.NewTicker(o.every)
	defer status.Stop()
	end := time.Now().Add(o.duration)
	for o.duration <= 0 || time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case code := <-codes:
			return res, fmt.Errorf("a bridge group exited with code %d", code)
		case <-status.C:
			say("published %d | acked %.0f", res.Published, acked())
		case <-tick.C:
			if err := publishBatch(perTick); err != nil {
				return res, err
			}
		}
	}
	say("publisher stopped; waiting for the groups to drain their nodes")
	deadline := time.Now().Add(2 * time.Minute)
	for acked() < float64(res.Published) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return res, fmt.Errorf("acked %.0f of %d", acked(), res.Published)
		}
		select {
		case <-status.C:
			say("published %d | acked %.0f", res.Published, acked())
		case <-tick.C:
		}
	}
	res.Readers = map[string]int{}
	for i, n := range nodes {
		for _, t := range n.GetStats("", "", true).Topics {
			for _, c := range t.Channels {
				res.Readers[fmt.Sprintf("n%d/%s", i, t.TopicName)] += len(c.Clients)
			}
		}
	}
	say("stopping the bridge groups")
	stopBridges()
	for range groups {
		if code := <-codes; code != 0 {
			return res, fmt.Errorf("a bridge group exited with code %d", code)
		}
	}

	// Read every stream back: each message once, in its route's stream, in order per key and node.
	seen := map[string]bool{}
	for r, stream := range streams {
		recs, err := kinesislocal.ReadAll(ctx, kc, stream)
		if err != nil {
			return res, err
		}
		last := map[string]int{}
		var d kpl.Deaggregator
		for _, rec := range recs {
			urs, _, err := d.Deaggregate(nil, rec.Data)
			if err != nil {
				return res, err
			}
			for _, u := range urs {
				var m devMsg
				if err := json.Unmarshal(u.Data, &m); err != nil {
					return res, err
				}
				res.Written++
				id := fmt.Sprintf("%s/%d/%s", topics[r], m.Node, m.UserID)
				if seen[fmt.Sprintf("%s/%d", id, m.Seq)] {
					res.Duplicates++
				}
				seen[fmt.Sprintf("%s/%d", id, m.Seq)] = true
				if s, ok := last[id]; ok && m.Seq < s {
					res.OrderViolations++
				}
				last[id] = m.Seq
			}
		}
	}
	res.Missing = res.Published - int64(len(seen))
	var readers []string
	for k, v := range res.Readers {
		readers = append(readers, fmt.Sprintf("%s:%d", k, v))
	}
	sort.Strings(readers)
	fmt.Fprintln(out)
	fmt.Fprintln(out, "summary")
	fmt.Fprintf(out, "  published %d over %d routes and %d nodes; written %d, missing %d, duplicates %d, order violations (per key and node) %d\n",
		res.Published, len(topics), len(nodes), res.Written, res.Missing, res.Duplicates, res.OrderViolations)
	fmt.Fprintf(out, "  bridge connections per node/topic (1 = read by exactly one group): %s\n", strings.Join(readers, " "))
	for g, owned := range res.Owned {
		fmt.Fprintf(out, "  group %d/%d read nodes %v\n", g, groups, owned)
	}
	return res, nil
}

// setEnv sets environment variables and returns what restores them.
func setEnv(vars map[string]string) (restore func()) {
	old := map[string]*string{}
	for k, v := range vars {
		if prev, ok := os.LookupEnv(k); ok {
			old[k] = &prev
		} else {
			old[k] = nil
		}
		os.Setenv(k, v)
	}
	return func() {
		for k, v := range old {
			if v == nil {
				os.Unsetenv(k)
			} else {
				os.Setenv(k, *v)
			}
		}
	}
}
