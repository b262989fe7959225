package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/nsqio/nsq/nsqd"

	"github.com/nsqk/nsqk/cmd/nsqk/internal/benchkit"
	"github.com/nsqk/nsqk/cmd/nsqk/internal/nullsink"
	"github.com/nsqk/nsqk/shared/local/nsqlocal"
	"github.com/nsqk/nsqk/shared/location"
)

// Topic names of the benchmark.
const (
	topicName  = "bench"
	smallTopic = "bench-small"
	streamName = "nsqk-bench"
)

// messageSet is a batch of location messages published once to a topic whose channels (one per
// drain run) existed before the first message, so every run drains the same messages.
type messageSet struct {
	Topic    string   `json:"topic"`
	Channels []string `json:"channels"`
	Count    int      `json:"count"`
	Bytes    int64    `json:"bytes"`
	AvgBytes float64  `json:"avg_bytes"`
	Users    int      `json:"users"`
	Seed     uint64   `json:"seed"`
	// PublishSeconds is the time to put them into nsqd and for nsqd to copy them to every channel.
	PublishSeconds float64 `json:"publish_seconds"`
	// expect[i] is user i's last seq: what the verifier expects.
	expect []uint64
}

// setup starts nsqd and publishes the message sets the enabled sections drain.
func (b *bench) setup(ctx context.Context) error {
	os.RemoveAll(b.logDir) // logs of an earlier run would be mistaken for this one's
	for _, d := range []string{b.o.dir, b.logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	exe := b.o.exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return fmt.Errorf("bench: cannot find my own executable for the child processes: %w", err)
		}
	}
	// Every child runs a private copy of the executable: a rebuild of bin/nsqk during the run
	// (make chaos, make build) must not change what is measured half-way.
	pinned := filepath.Join(b.o.dir, "nsqk-under-test")
	sum, err := copyExecutable(exe, pinned)
	if err != nil {
		return fmt.Errorf("bench: copy %s for the child processes: %w", exe, err)
	}
	b.exe = pinned
	b.r.Build = describeBuild(sum)
	if b.o.released != "" {
		b.releasedExe = filepath.Join(b.o.dir, "baseline-released-under-test")
		if _, err := copyExecutable(b.o.released, b.releasedExe); err != nil {
			return fmt.Errorf("bench: --released-baseline: %w", err)
		}
	}
	if b.o.compareExe != "" {
		b.compareExe = filepath.Join(b.o.dir, "nsqk-compared")
		csum, err := copyExecutable(b.o.compareExe, b.compareExe)
		if err != nil {
			return fmt.Errorf("bench: --compare-exe: %w", err)
		}
		b.r.CompareBuild = &buildInfo{SHA256: csum, Path: b.o.compareExe}
	}
	b.r.Machine = benchkit.DescribeMachine()
	b.say("machine: %s, %d cores, %s, %s, load %v", b.r.Machine.CPUModel, b.r.Machine.Cores, b.r.Machine.GoVersion, b.r.Machine.Kernel, b.r.Machine.LoadAvg)

	// Every queue stays in memory: MemQueueSize covers the largest topic (nsqd allocates a
	// channel buffer of that many pointers per topic and channel: 8 MB per million).
	memQ := max(b.o.messages, b.o.smallMessages, b.o.scaleMessages) + 10_000
	if rates, _ := b.o.rateList(); len(rates) > 0 {
		memQ = max(memQ, int(float64(slices.Max(rates))*b.o.latencyFor.Seconds()*1.2)+10_000)
	}
	n, err := nsqlocal.Start(nsqlocal.Options{MaxRdyCount: int64(max(10_000, b.o.maxInFlight)), MemQueueSize: int64(memQ)})
	if err != nil {
		return err
	}
	b.nsqd = n
	b.say("nsqd (embedded) on tcp://%s http://%s, mem-queue-size %d, max-rdy-count %d", n.TCPAddr, n.HTTPAddr, memQ, max(10_000, b.o.maxInFlight))

	var chans []string
	for i := 1; i <= b.o.repeat; i++ {
		if b.o.on("baseline") {
			chans = append(chans, repeatName("baseline", i, b.o.repeat))
			if b.releasedExe != "" {
				chans = append(chans, repeatName("baseline-released", i, b.o.repeat))
			}
		}
		if b.o.on("null") {
			chans = append(chans, repeatName("bridge-null", i, b.o.repeat))
			if b.compareExe != "" {
				chans = append(chans, repeatName("bridge-compared", i, b.o.repeat))
			}
		}
	}
	if b.o.on("kinesalite") {
		chans = append(chans, "bridge-kinesalite")
	}
	if b.o.profile {
		chans = append(chans, "profile")
		if b.compareExe != "" {
			chans = append(chans, "profile-compared")
		}
	}
	if len(chans) > 0 {
		if b.main, err = b.publish(ctx, topicName, chans, b.o.messages, b.o.seed); err != nil {
			return err
		}
		b.r.Messages = b.main
	}
	chans = nil
	if b.o.on("null-latency") {
		chans = append(chans, "bridge-null-latency")
	}
	if b.o.on("shards") {
		counts, _ := b.o.shardCountList()
		for _, c := range counts {
			chans = append(chans, fmt.Sprintf("shards-%d", c))
		}
	}
	if len(chans) > 0 {
		if b.small, err = b.publish(ctx, smallTopic, chans, b.o.smallMessages, b.o.seed+1); err != nil {
			return err
		}
		b.r.SmallMessages = b.small
	}
	return nil
}

// runName names the i-th of n repetitions.
func repeatName(base string, i, n int) string {
	if n == 1 {
		return base
	}
	return fmt.Sprintf("%s-%d", base, i)
}

// publish creates the topic and its channels, then puts count generated messages into nsqd
// in-process (nsqd.Topic.PutMessages, batches of 200: the same code path as an MPUB, minus the
// TCP hop, in order) and waits until nsqd has copied them to every channel.
func (b *bench) publish(ctx context.Context, topic string, channels []string, count int, seed uint64) (*messageSet, error) {
	return b.publishOn(ctx, b.nsqd, topic, channels, count, seed)
}

// publishOn is publish into one of several nsqd nodes.
func (b *bench) publishOn(ctx context.Context, node *nsqlocal.NSQD, topic string, channels []string, count int, seed uint64) (*messageSet, error) {
	t0 := time.Now()
	t := node.GetTopic(topic)
	for _, c := range channels {
		t.GetChannel(c)
	}
	gen := location.NewGenerator(b.o.users, seed)
	set := &messageSet{Topic: topic, Channels: channels, Count: count, Users: b.o.users, Seed: seed, expect: make([]uint64, b.o.users)}
	const batchSize = 200
	var slab []byte
	batch := make([]*nsqd.Message, 0, batchSize)
	for i := 0; i < count; i++ {
		if cap(slab)-len(slab) < 1024 {
			slab = make([]byte, 0, 256<<10)
		}
		body, user, seq := gen.Next(slab[len(slab):])
		slab = slab[:len(slab)+len(body)]
		body = body[:len(body):len(body)]
		if n, ok := userIndex(user); ok {
			set.expect[n] = seq
		}
		set.Bytes += int64(len(body))
		batch = append(batch, nsqd.NewMessage(t.GenerateID(), body))
		if len(batch) == batchSize || i == count-1 {
			if err := t.PutMessages(batch); err != nil {
				return nil, fmt.Errorf("publish to %s: %w", topic, err)
			}
			batch = make([]*nsqd.Message, 0, batchSize)
		}
	}
	set.AvgBytes = float64(set.Bytes) / float64(count)
	// Wait for the topic's pump to hand every message to every channel, so it does not compete
	// with the first run.
	if err := poll(ctx, 5*time.Minute, time.Millisecond*5, func() bool {
		for _, c := range channels {
			if st := channelStatsOn(node, topic, c); st.MessageCount < uint64(count) {
				return false
			}
		}
		return true
	}); err != nil {
		return nil, fmt.Errorf("nsqd did not fan %s out to its channels: %w", topic, err)
	}
	set.PublishSeconds = time.Since(t0).Seconds()
	b.say("published %d messages (avg %.0f bytes, %d users) to %q with channels %v in %.1fs",
		count, set.AvgBytes, b.o.users, topic, channels, set.PublishSeconds)
	runtime.GC()
	return set, nil
}

// copyExecutable copies an executable and returns its SHA-256.
func copyExecutable(src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(out, h), in); err != nil {
		out.Close()
		return "", err
	}
	if err := out.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), os.Rename(tmp, dst)
}

// buildInfo says what was measured.
type buildInfo struct {
	GitCommit string   `json:"git_commit,omitempty"`
	GitDirty  []string `json:"git_uncommitted,omitempty"` // `git status --porcelain` (first 30 lines)
	SHA256    string   `json:"binary_sha256"`
	Path      string   `json:"path,omitempty"` // given on the command line (--compare-exe)
}

// describeBuild asks git (if there is one) which commit the working directory is at.
func describeBuild(sum string) buildInfo {
	bi := buildInfo{SHA256: sum}
	if out, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		bi.GitCommit = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil {
		for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
			if l != "" && len(bi.GitDirty) < 30 {
				bi.GitDirty = append(bi.GitDirty, strings.TrimSpace(l))
			}
		}
	}
	return bi
}

// userIndex returns i for location.UserID(i).
func userIndex(id string) (int, bool) {
	if len(id) != 10 || id[0] != 'u' {
		return 0, false
	}
	n := 0
	for _, c := range []byte(id[1:]) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// verifier returns a fresh exact-once verifier expecting the set's messages.
func (s *messageSet) verifier() *nullsink.Verifier { return nullsink.NewVerifier(s.expect) }

// channelStats returns one channel's counters (zero if it does not exist).
func (b *bench) channelStats(topic, channel string) nsqd.ChannelStats {
	return channelStatsOn(b.nsqd, topic, channel)
}

func channelStatsOn(node *nsqlocal.NSQD, topic, channel string) nsqd.ChannelStats {
	st := node.GetStats(topic, channel, false)
	for _, t := range st.Topics {
		for _, c := range t.Channels {
			return c
		}
	}
	return nsqd.ChannelStats{}
}

// remaining is what a channel still holds: queued, in flight (delivered, not FINished) and deferred.
func remainingOf(c nsqd.ChannelStats) int64 {
	return c.Depth + int64(c.InFlightCount) + int64(c.DeferredCount)
}

// pollUntil calls cond every interval until it holds, ctx ends or timeout passes.
func poll(ctx context.Context, timeout, interval time.Duration, cond func() bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("timed out after %s", timeout)
		case <-tick.C:
		}
	}
	return nil
}

func logPath(dir, name string) string { return filepath.Join(dir, name+".log") }
