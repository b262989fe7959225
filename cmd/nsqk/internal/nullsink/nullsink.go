// Package nullsink is a benchmark-only Kinesis endpoint: an HTTP server speaking the Kinesis JSON
// 1.1 wire protocol (X-Amz-Target: Kinesis_20131202.<Op>, application/x-amz-json-1.1) for exactly
// what the bridge calls — DescribeStreamSummary, ListShards and PutRecords — that stores nothing.
//
// PutRecords routes each entry like Kinesis (ExplicitHashKey, else MD5 of the PartitionKey, into
// the hash key ranges CreateStream gives), answers a sequence number (increasing per shard) and
// the shard id, de-aggregates every KPL record and counts the user records. With a Verifier it
// checks that every published location message arrived exactly once, in order per user, on the
// shard owning its key. With Throttle it enforces Kinesis' per-shard write limits (1 MiB/s and
// 1000 records/s, one second of burst) and answers ProvisionedThroughputExceededException per
// entry beyond them, a fault no emulator produces.
//
// It is built to cost little CPU next to the process it measures: a purpose-built JSON reader for
// the PutRecords request, pooled buffers, no per-record allocation. Stats.HandlerCPU is the
// thread CPU time its handlers used, so a benchmark can report the instrument's own share.
package nullsink

import (
	"bytes"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/shardmap"
)

// Kinesis' limits the sink applies.
const (
	maxEntries      = 500
	maxRequestBytes = 5 << 20
	maxKeyChars     = 256
	// Account is the account id in ARNs and error messages.
	Account = "123456789012"
	// Region is the region in ARNs.
	Region = "us-east-1"
)

// Config configures a sink. Zero values take the defaults noted.
type Config struct {
	// Addr to listen on; default 127.0.0.1:0.
	Addr string
	// Stream is the one stream the sink serves; default "nsqk-bench". Requests naming another
	// stream get ResourceNotFoundException.
	Stream string
	// Shards is the number of open shards; default 1.
	Shards int
	// Throttle enforces per-shard write limits: BytesPerSecond (default 1 MiB, counting data +
	// partition key) and RecordsPerSecond (default 1000), each with one second of burst.
	Throttle         bool
	BytesPerSecond   int
	RecordsPerSecond int
	// MaxRecordSizeKiB is what DescribeStreamSummary reports and PutRecords enforces; default 1024.
	MaxRecordSizeKiB int
	// Verifier, if set, sees every user record of every accepted entry, in sequence order per shard.
	Verifier *Verifier
	// Latency delays every PutRecords answer (after the records are accepted), to mimic the
	// tens of milliseconds a real PutRecords takes: a client's batching depends on it.
	Latency time.Duration
	// Now is the clock of the throttle; default time.Now.
	Now func() time.Time
}

// Stats counts what the sink did.
type Stats struct {
	PutRecordsCalls  int64 `json:"putrecords_calls"`
	OtherCalls       int64 `json:"other_calls"` // DescribeStreamSummary, ListShards, unknown
	BadRequests      int64 `json:"bad_requests"`
	Entries          int64 `json:"entries"`           // PutRecords entries received
	EntriesAccepted  int64 `json:"entries_accepted"`  // = Kinesis records written
	EntriesThrottled int64 `json:"entries_throttled"` // answered ProvisionedThroughputExceededException
	// RecordBytes is data + partition key of accepted entries (what Kinesis meters and limits).
	RecordBytes int64 `json:"record_bytes"`
	// BodyBytes is the size of every PutRecords request body (the JSON with base64 data: what
	// goes over the wire before TLS and HTTP headers).
	BodyBytes int64 `json:"body_bytes"`
	// UserRecords and UserBytes count the de-aggregated user records of accepted entries.
	UserRecords int64 `json:"user_records"`
	UserBytes   int64 `json:"user_bytes"`
	Aggregated  int64 `json:"aggregated"`   // accepted entries that were KPL aggregates
	PassThrough int64 `json:"pass_through"` // accepted entries that were plain records
	DeaggErrors int64 `json:"deagg_errors"` // aggregates that could not be fully expanded
	// HandlerCPU is the thread CPU time spent handling requests once their body is read
	// (parsing, MD5, de-aggregating, verifying, answering); net/http's own work is not in it.
	HandlerCPU time.Duration `json:"handler_cpu_ns"`
	Shards     []ShardStats  `json:"shards"`
}

// ShardStats is one shard's share.
type ShardStats struct {
	ID          string `json:"id"`
	Accepted    int64  `json:"accepted"`
	Throttled   int64  `json:"throttled"`
	RecordBytes int64  `json:"record_bytes"`
	UserRecords int64  `json:"user_records"`
}

// Server is a running sink.
type Server struct {
	URL      string // http://127.0.0.1:PORT
	cfg      Config
	shards   []shardmap.Shard
	smap     *shardmap.Map
	arn      string
	created  time.Time
	ln       net.Listener
	srv      *http.Server
	bytesPS  float64
	recordPS float64
	maxRec   int

	mu      sync.Mutex // accept order: throttle, sequence numbers, verification, stats
	seq     []uint64
	buckets []bucket
	st      Stats

	putCalls, other, bad, body atomic.Int64
	cpu                        atomic.Int64
}

// New returns a sink that is not listening (use Handler, e.g. with httptest).
func New(cfg Config) *Server {
	if cfg.Stream == "" {
		cfg.Stream = "nsqk-bench"
	}
	if cfg.Shards < 1 {
		cfg.Shards = 1
	}
	if cfg.BytesPerSecond <= 0 {
		cfg.BytesPerSecond = 1 << 20
	}
	if cfg.RecordsPerSecond <= 0 {
		cfg.RecordsPerSecond = 1000
	}
	if cfg.MaxRecordSizeKiB <= 0 {
		cfg.MaxRecordSizeKiB = 1024
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	shards := ShardRanges(cfg.Shards)
	m, err := shardmap.New(shards)
	if err != nil {
		panic(err) // ShardRanges tiles the space by construction
	}
	s := &Server{cfg: cfg, shards: shards, smap: m, created: time.Now(),
		arn:     "arn:aws:kinesis:" + Region + ":" + Account + ":stream/" + cfg.Stream,
		bytesPS: float64(cfg.BytesPerSecond), recordPS: float64(cfg.RecordsPerSecond), maxRec: cfg.MaxRecordSizeKiB << 10,
		seq: make([]uint64, len(shards)), buckets: make([]bucket, len(shards))}
	s.st.Shards = make([]ShardStats, len(shards))
	for i, sh := range shards {
		s.st.Shards[i].ID = sh.ID
	}
	if cfg.Verifier != nil {
		cfg.Verifier.CheckShards(m)
	}
	return s
}

// Start returns a sink listening on cfg.Addr.
func Start(cfg Config) (*Server, error) {
	s := New(cfg)
	addr := cfg.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s.ln = ln
	s.URL = "http://" + ln.Addr().String()
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

// Close stops the server and closes its connections.
func (s *Server) Close() error {
	if s.srv == nil {
		return nil
	}
	return s.srv.Close()
}

// Stream returns the stream name; ARN its ARN.
func (s *Server) Stream() string { return s.cfg.Stream }

// ARN returns the stream's ARN.
func (s *Server) ARN() string { return s.arn }

// Shards returns the open shards (do not modify).
func (s *Server) Shards() []shardmap.Shard { return s.shards }

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	st := s.st
	st.Shards = append([]ShardStats(nil), s.st.Shards...)
	s.mu.Unlock()
	st.PutRecordsCalls, st.OtherCalls, st.BadRequests, st.BodyBytes = s.putCalls.Load(), s.other.Load(), s.bad.Load(), s.body.Load()
	st.HandlerCPU = time.Duration(s.cpu.Load())
	return st
}

// Handler is the sink's HTTP handler.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serve) }

// threadCPU is the calling thread's CPU time (the goroutine must be locked to its thread).
func threadCPU() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts) != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

var bufPool = sync.Pool{New: func() any { return new(reqState) }}

// reqState is the per-request scratch, pooled.
type reqState struct {
	body bytes.Buffer
	data []byte
	req  putRecordsRequest
	d    kpl.Deaggregator
	urs  []kpl.UserRecord
	out  []byte
	res  []entryResult
	keys [][]byte
	dats [][]byte
}

type entryResult struct {
	shard    int
	code     string
	seq      uint64
	ur0, ur1 int // user records of this entry: urs[ur0:ur1]
	agg      bool
	deaggErr bool
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	st := bufPool.Get().(*reqState)
	defer bufPool.Put(st)
	st.body.Reset()
	if r.ContentLength > 0 {
		st.body.Grow(int(r.ContentLength))
	}
	if _, err := st.body.ReadFrom(io.LimitReader(r.Body, 16<<20)); err != nil {
		return
	}
	// With the body read, lock the goroutine to its thread so that the thread's CPU clock
	// measures the handling (locking before the read would add a thread hand-off to every
	// blocking read, costing more than it measures).
	runtime.LockOSThread()
	t0 := threadCPU()
	status, body := s.handle(r, st)
	s.cpu.Add(int64(threadCPU() - t0))
	runtime.UnlockOSThread()
	if s.cfg.Latency > 0 && status == http.StatusOK && r.Header.Get("X-Amz-Target") == "Kinesis_20131202.PutRecords" {
		time.Sleep(s.cfg.Latency)
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	if status != http.StatusOK {
		w.Header().Set("X-Amzn-ErrorType", errorType(body))
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// errorType reads __type back from an error body built by fail.
func errorType(body []byte) string {
	var e struct {
		Type string `json:"__type"`
	}
	json.Unmarshal(body, &e)
	return e.Type
}

// handle answers one request: the status and the body.
func (s *Server) handle(r *http.Request, st *reqState) (int, []byte) {
	op, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), "Kinesis_20131202.")
	if r.Method != http.MethodPost || !ok {
		s.other.Add(1)
		return s.fail(http.StatusBadRequest, "UnknownOperationException", "")
	}
	switch op {
	case "PutRecords":
		s.putCalls.Add(1)
		s.body.Add(int64(st.body.Len()))
		return s.putRecords(st)
	case "DescribeStreamSummary":
		s.other.Add(1)
		return s.describe(st.body.Bytes())
	case "ListShards":
		s.other.Add(1)
		return s.listShards(st.body.Bytes())
	}
	s.other.Add(1)
	return s.fail(http.StatusBadRequest, "UnknownOperationException", op+" is not supported by the null sink")
}

// fail answers an error the way Kinesis does (JSON 1.1: __type and message).
func (s *Server) fail(status int, typ, msg string) (int, []byte) {
	s.bad.Add(1)
	b, _ := json.Marshal(map[string]string{"__type": typ, "message": msg})
	return status, b
}

// ours reports whether a request names this stream (by name or ARN).
func (s *Server) ours(name, arn []byte) bool {
	switch {
	case len(arn) > 0:
		return string(arn) == s.arn && (len(name) == 0 || string(name) == s.cfg.Stream)
	default:
		return string(name) == s.cfg.Stream
	}
}

func (s *Server) notFound(name, arn []byte) (int, []byte) {
	id := string(name)
	if id == "" {
		id = string(arn)
	}
	return s.fail(http.StatusBadRequest, "ResourceNotFoundException",
		fmt.Sprintf("Stream %s under account %s not found.", id, Account))
}

func (s *Server) describe(body []byte) (int, []byte) {
	var in struct{ StreamName, StreamARN string }
	if err := json.Unmarshal(body, &in); err != nil {
		return s.fail(http.StatusBadRequest, "SerializationException", err.Error())
	}
	if !s.ours([]byte(in.StreamName), []byte(in.StreamARN)) {
		return s.notFound([]byte(in.StreamName), []byte(in.StreamARN))
	}
	out := map[string]any{"StreamDescriptionSummary": map[string]any{
		"StreamName": s.cfg.Stream, "StreamARN": s.arn, "StreamStatus": "ACTIVE",
		"StreamModeDetails":       map[string]string{"StreamMode": "PROVISIONED"},
		"RetentionPeriodHours":    24,
		"StreamCreationTimestamp": float64(s.created.UnixMilli()) / 1000,
		"EnhancedMonitoring":      []map[string]any{{"ShardLevelMetrics": []string{}}},
		"EncryptionType":          "NONE",
		"OpenShardCount":          len(s.shards),
		"ConsumerCount":           0,
		"MaxRecordSizeInKiB":      s.cfg.MaxRecordSizeKiB,
	}}
	b, _ := json.Marshal(out)
	return http.StatusOK, b
}

func (s *Server) listShards(body []byte) (int, []byte) {
	var in struct {
		StreamName, StreamARN, NextToken, ExclusiveStartShardId string
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return s.fail(http.StatusBadRequest, "SerializationException", err.Error())
	}
	if in.NextToken != "" { // every listing fits in one page: a token can only be stale
		return s.fail(http.StatusBadRequest, "InvalidArgumentException", "invalid NextToken")
	}
	if !s.ours([]byte(in.StreamName), []byte(in.StreamARN)) {
		return s.notFound([]byte(in.StreamName), []byte(in.StreamARN))
	}
	type hkr struct{ StartingHashKey, EndingHashKey string }
	type snr struct{ StartingSequenceNumber string }
	type shard struct {
		ShardId             string
		HashKeyRange        hkr
		SequenceNumberRange snr
	}
	out := struct{ Shards []shard }{Shards: []shard{}}
	for i, sh := range s.shards {
		if in.ExclusiveStartShardId != "" && sh.ID <= in.ExclusiveStartShardId {
			continue
		}
		out.Shards = append(out.Shards, shard{ShardId: sh.ID, HashKeyRange: hkr{sh.StartKey, sh.End.String()},
			SequenceNumberRange: snr{seqNumber(i, 0)}})
	}
	b, _ := json.Marshal(out)
	return http.StatusOK, b
}

// seqNumber formats a 56-digit sequence number, increasing with n within a shard.
func seqNumber(shard int, n uint64) string {
	return fmt.Sprintf("4960%020d%032d", shard, n)
}

func md5Sum(b []byte) [16]byte { return md5.Sum(b) }

func (s *Server) putRecords(st *reqState) (int, []byte) {
	var err error
	st.data, err = parsePutRecords(st.body.Bytes(), &st.req, st.data)
	if err != nil {
		return s.fail(http.StatusBadRequest, "SerializationException", err.Error())
	}
	req := &st.req
	if !s.ours(req.StreamName, req.StreamARN) {
		return s.notFound(req.StreamName, req.StreamARN)
	}
	if n := len(req.Records); n < 1 || n > maxEntries {
		return s.fail(http.StatusBadRequest, "ValidationException",
			fmt.Sprintf("1 validation error detected: Value at 'records' failed to satisfy constraint: Member must have length between 1 and %d (got %d)", maxEntries, n))
	}
	// Validate and route every entry, and de-aggregate it, before taking the accept lock.
	st.res, st.urs = st.res[:0], st.urs[:0]
	total := 0
	for i := range req.Records {
		e := &req.Records[i]
		size := len(e.Data) + len(e.PartitionKey)
		total += size
		switch {
		case !e.hasData:
			return s.fail(http.StatusBadRequest, "ValidationException", fmt.Sprintf("records.%d.member.data: must not be null", i+1))
		case len(e.PartitionKey) == 0 || utf8.RuneCount(e.PartitionKey) > maxKeyChars:
			return s.fail(http.StatusBadRequest, "ValidationException", fmt.Sprintf("records.%d.member.partitionKey: length must be 1-%d", i+1, maxKeyChars))
		case size > s.maxRec:
			return s.fail(http.StatusBadRequest, "ValidationException", fmt.Sprintf("records.%d.member.data: record size %d exceeds %d bytes", i+1, size, s.maxRec))
		}
		var h shardmap.Hash
		if e.ExplicitHashKey != nil {
			if h, err = shardmap.ParseHash(string(e.ExplicitHashKey)); err != nil {
				return s.fail(http.StatusBadRequest, "InvalidArgumentException",
					"Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was "+string(e.ExplicitHashKey))
			}
		} else {
			h = md5.Sum(e.PartitionKey)
		}
		res := entryResult{shard: s.smap.Lookup(h), ur0: len(st.urs)}
		var derr error
		st.urs, res.agg, derr = st.d.Deaggregate(st.urs, e.Data)
		res.deaggErr = derr != nil
		res.ur1 = len(st.urs)
		if !res.agg { // a plain record: its own partition key applies
			st.urs[res.ur0].PartitionKey = e.PartitionKey
		}
		st.res = append(st.res, res)
	}
	if total > maxRequestBytes {
		return s.fail(http.StatusBadRequest, "InvalidArgumentException", fmt.Sprintf("request of %d bytes exceeds %d", total, maxRequestBytes))
	}

	failed := 0
	s.mu.Lock()
	now := s.cfg.Now()
	for i := range st.res {
		res := &st.res[i]
		e := &req.Records[i]
		size := len(e.Data) + len(e.PartitionKey)
		sh := &s.st.Shards[res.shard]
		s.st.Entries++
		if s.cfg.Throttle && !s.buckets[res.shard].take(now, size, s.bytesPS, s.recordPS) {
			res.code = "ProvisionedThroughputExceededException"
			s.st.EntriesThrottled++
			sh.Throttled++
			failed++
			continue
		}
		s.seq[res.shard]++
		res.seq = s.seq[res.shard]
		s.st.EntriesAccepted++
		s.st.RecordBytes += int64(size)
		sh.Accepted++
		sh.RecordBytes += int64(size)
		urs := st.urs[res.ur0:res.ur1]
		s.st.UserRecords += int64(len(urs))
		sh.UserRecords += int64(len(urs))
		for _, u := range urs {
			s.st.UserBytes += int64(len(u.Data))
		}
		if res.agg {
			s.st.Aggregated++
		} else {
			s.st.PassThrough++
		}
		if res.deaggErr {
			s.st.DeaggErrors++
		}
		if v := s.cfg.Verifier; v != nil {
			st.keys, st.dats = st.keys[:0], st.dats[:0]
			for _, u := range urs {
				key := u.PartitionKey
				if u.ExplicitHashKey != nil { // routed by hash key: its partition key need not be the user's
					key = nil
				}
				st.keys, st.dats = append(st.keys, key), append(st.dats, u.Data)
			}
			v.observeAll(res.shard, st.keys, st.dats)
		}
	}
	s.mu.Unlock()

	b := st.out[:0]
	b = append(b, `{"FailedRecordCount":`...)
	b = strconv.AppendInt(b, int64(failed), 10)
	b = append(b, `,"EncryptionType":"NONE","Records":[`...)
	for i, res := range st.res {
		if i > 0 {
			b = append(b, ',')
		}
		if res.code != "" {
			b = append(b, `{"ErrorCode":"`...)
			b = append(b, res.code...)
			b = append(b, `","ErrorMessage":"Rate exceeded for shard `...)
			b = append(b, s.shards[res.shard].ID...)
			b = append(b, ` in stream `...)
			b = append(b, s.cfg.Stream...)
			b = append(b, ` under account `+Account+`."}`...)
			continue
		}
		b = append(b, `{"SequenceNumber":"`...)
		b = append(b, seqNumber(res.shard, res.seq)...)
		b = append(b, `","ShardId":"`...)
		b = append(b, s.shards[res.shard].ID...)
		b = append(b, `"}`...)
	}
	b = append(b, "]}"...)
	st.out = b
	// Drop references into this request's buffers before the state goes back to the pool.
	clear(st.urs)
	clear(st.keys)
	clear(st.dats)
	return http.StatusOK, b
}
