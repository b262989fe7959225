// Package kinesisfault is a fault-injecting front for a Kinesis endpoint (kinesalite or
// kinesis-mock). It speaks the real Kinesis JSON 1.1 wire protocol: requests are forwarded to the
// emulator, and faults that no emulator produces are injected on the way — per-entry PutRecords
// failures (throttling, internal errors, KMS errors), whole-request errors, latency beyond the
// client's timeout, connection resets before or after the write, and the endpoint going down.
//
// Per-entry failures are injected by removing the chosen entries from the forwarded request and
// merging synthetic error results into the emulator's response at their positions, so a "failed"
// entry is really not written, exactly as with Kinesis.
package kinesisfault

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Faults describes what to inject; the zero value injects nothing. Rates are probabilities.
type Faults struct {
	// EntryFailRate fails each PutRecords entry with this probability, with EntryErrorCode
	// (default ProvisionedThroughputExceededException).
	EntryFailRate  float64
	EntryErrorCode string
	// RequestErrorRate answers a whole request with HTTP RequestErrorStatus (default 500) and
	// error type RequestErrorType (default InternalFailure) without forwarding it.
	RequestErrorRate   float64
	RequestErrorStatus int
	RequestErrorType   string
	// Delay holds every matching request this long before forwarding (for client timeouts).
	Delay time.Duration
	// ResetBeforeRate closes the connection without forwarding; ResetAfterRate forwards (the
	// write happens) and then closes the connection without answering.
	ResetBeforeRate float64
	ResetAfterRate  float64
	// Operations limits faults to these operations (e.g. "PutRecords"); empty = PutRecords only.
	Operations []string
}

// Stats counts what the front did.
type Stats struct {
	Requests, Forwarded, EntriesFailed, RequestErrors, Delayed, ResetsBefore, ResetsAfter int64
}

// Front is a running fault-injecting proxy.
type Front struct {
	URL    string // http://127.0.0.1:PORT
	addr   string
	target *url.URL
	client *http.Client

	mu     sync.Mutex
	faults Faults
	rng    *rand.Rand
	ln     net.Listener
	srv    *http.Server
	down   bool

	requests, forwarded, entriesFailed, requestErrors, delayed, resetsBefore, resetsAfter atomic.Int64
}

// Start listens on a free loopback port and forwards to target (an emulator endpoint URL).
func Start(target string) (*Front, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	f := &Front{target: u, rng: rand.New(rand.NewPCG(1, 2)),
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f.addr = ln.Addr().String()
	f.URL = "http://" + f.addr
	f.serve(ln)
	return f, nil
}

func (f *Front) serve(ln net.Listener) {
	f.ln = ln
	f.srv = &http.Server{Handler: http.HandlerFunc(f.handle), ReadHeaderTimeout: 10 * time.Second}
	go f.srv.Serve(ln)
}

// Set replaces the active faults.
func (f *Front) Set(fs Faults) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = fs
}

// Down closes the listener and every connection: clients get connection refused until Up.
func (f *Front) Down() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return
	}
	f.down = true
	f.srv.Close()
}

// Up listens again on the same address.
func (f *Front) Up() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.down {
		return nil
	}
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return err
	}
	f.down = false
	f.serve(ln)
	return nil
}

// Close stops the front.
func (f *Front) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.srv.Close()
}

// Stats returns the counters.
func (f *Front) Stats() Stats {
	return Stats{f.requests.Load(), f.forwarded.Load(), f.entriesFailed.Load(), f.requestErrors.Load(),
		f.delayed.Load(), f.resetsBefore.Load(), f.resetsAfter.Load()}
}

func (f *Front) roll(p float64) bool {
	if p <= 0 {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rng.Float64() < p
}

func (f *Front) handle(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "Kinesis_20131202.")
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	f.mu.Lock()
	fs := f.faults
	f.mu.Unlock()
	ops := fs.Operations
	if len(ops) == 0 {
		ops = []string{"PutRecords"}
	}
	match := false
	for _, o := range ops {
		match = match || o == op
	}
	if !match {
		f.forward(w, r, body)
		return
	}
	if fs.Delay > 0 {
		f.delayed.Add(1)
		select {
		case <-time.After(fs.Delay):
		case <-r.Context().Done():
			return
		}
	}
	if f.roll(fs.ResetBeforeRate) {
		f.resetsBefore.Add(1)
		reset(w)
		return
	}
	if f.roll(fs.RequestErrorRate) {
		f.requestErrors.Add(1)
		status, typ := fs.RequestErrorStatus, fs.RequestErrorType
		if status == 0 {
			status = http.StatusInternalServerError
		}
		if typ == "" {
			typ = "InternalFailure"
		}
		writeError(w, status, typ, "injected by kinesisfault")
		return
	}
	if op == "PutRecords" && fs.EntryFailRate > 0 {
		f.putRecords(w, r, body, fs)
		return
	}
	if f.roll(fs.ResetAfterRate) {
		f.resetsAfter.Add(1)
		f.roundTrip(r, body) // written, answer lost
		reset(w)
		return
	}
	f.forward(w, r, body)
}

// putRecords fails a random subset of entries: they are not forwarded, and their results are
// errors at their original positions.
func (f *Front) putRecords(w http.ResponseWriter, r *http.Request, body []byte, fs Faults) {
	var req map[string]json.RawMessage
	var entries []json.RawMessage
	if json.Unmarshal(body, &req) != nil || json.Unmarshal(req["Records"], &entries) != nil {
		f.forward(w, r, body)
		return
	}
	code := fs.EntryErrorCode
	if code == "" {
		code = "ProvisionedThroughputExceededException"
	}
	fail := make([]bool, len(entries))
	var keep []json.RawMessage
	for i, e := range entries {
		if fail[i] = f.roll(fs.EntryFailRate); !fail[i] {
			keep = append(keep, e)
		}
	}
	var results []json.RawMessage
	if len(keep) > 0 {
		req["Records"], _ = json.Marshal(keep)
		fwd, _ := json.Marshal(req)
		resp, err := f.roundTrip(r, fwd)
		if err != nil {
			reset(w)
			return
		}
		if resp.status != http.StatusOK {
			w.WriteHeader(resp.status)
			w.Write(resp.body)
			return
		}
		var out struct{ Records []json.RawMessage }
		if err := json.Unmarshal(resp.body, &out); err != nil || len(out.Records) != len(keep) {
			writeError(w, http.StatusInternalServerError, "InternalFailure", "kinesisfault: bad upstream response")
			return
		}
		results = out.Records
	}
	if f.roll(fs.ResetAfterRate) {
		f.resetsAfter.Add(1)
		reset(w)
		return
	}
	merged := make([]json.RawMessage, len(entries))
	failed := 0
	errResult, _ := json.Marshal(map[string]string{"ErrorCode": code, "ErrorMessage": "injected by kinesisfault"})
	for i := range entries {
		if fail[i] {
			merged[i] = errResult
			failed++
		} else {
			merged[i], results = results[0], results[1:]
		}
	}
	f.entriesFailed.Add(int64(failed))
	out, _ := json.Marshal(map[string]any{"FailedRecordCount": failed, "Records": merged})
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Write(out)
}

type upstream struct {
	status int
	body   []byte
}

func (f *Front) roundTrip(r *http.Request, body []byte) (*upstream, error) {
	f.forwarded.Add(1)
	// Never abort an upstream call when the client gives up: kinesalite crashes on a request reset
	// mid-flight (unhandled ECONNRESET). The write completes; the client has timed out anyway.
	req, err := http.NewRequestWithContext(context.WithoutCancel(r.Context()), r.Method, f.target.String()+r.URL.Path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header = r.Header.Clone()
	req.ContentLength = int64(len(body))
	req.Header.Del("Content-Length")
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return &upstream{status: resp.StatusCode, body: b}, err
}

func (f *Front) forward(w http.ResponseWriter, r *http.Request, body []byte) {
	resp, err := f.roundTrip(r, body)
	if err != nil {
		writeError(w, http.StatusBadGateway, "InternalFailure", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.WriteHeader(resp.status)
	w.Write(resp.body)
}

func writeError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"__type":%q,"message":%q}`, typ, msg)
}

// reset closes the client connection without an HTTP answer.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok { // not reachable with net/http's HTTP/1.1 server; answer rather than hang
		writeError(w, http.StatusBadGateway, "InternalFailure", "kinesisfault: cannot reset this connection")
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0) // RST, not FIN
	}
	conn.Close()
}
