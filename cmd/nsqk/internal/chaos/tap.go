package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Tap is a pass-through HTTP proxy in front of the Kinesis emulator (behind the fault front) that
// records every PutRecords entry the emulator accepted: a wire-level log of what was written,
// independent of the bridge, that survives the stream's deletion. It forwards each request to the
// end even when the client has gone away (a killed bridge, a reset connection), so the emulator
// never sees an aborted request and the log never misses a write.
type Tap struct {
	URL    string
	target string
	client *http.Client
	srv    *http.Server

	mu       sync.Mutex
	accepted []TapRecord
	puts     int
}

// TapRecord is one PutRecords entry the emulator accepted.
type TapRecord struct {
	Shard  string
	SeqNum string
	Data   []byte
}

// StartTap listens on a free loopback port and forwards to target.
func StartTap(target string) (*Tap, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &Tap{URL: "http://" + ln.Addr().String(), target: strings.TrimSuffix(target, "/"),
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	t.srv = &http.Server{Handler: http.HandlerFunc(t.handle), ReadHeaderTimeout: 10 * time.Second}
	go t.srv.Serve(ln)
	return t, nil
}

// Close stops the tap.
func (t *Tap) Close() { t.srv.Close() }

// Accepted returns the entries accepted so far, in the order the emulator answered.
func (t *Tap) Accepted() []TapRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]TapRecord(nil), t.accepted...)
}

func (t *Tap) handle(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.Method, t.target+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	req.Header.Del("Content-Length")
	req.ContentLength = int64(len(body))
	resp, err := t.client.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".PutRecords") && resp.StatusCode == http.StatusOK {
		t.record(body, out)
	}
	for k, v := range resp.Header {
		if k != "Content-Length" {
			w.Header()[k] = v
		}
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(out)
}

func (t *Tap) record(reqBody, respBody []byte) {
	var in struct{ Records []struct{ Data []byte } }
	var out struct {
		Records []struct {
			ShardId, SequenceNumber, ErrorCode string
		}
	}
	if json.Unmarshal(reqBody, &in) != nil || json.Unmarshal(respBody, &out) != nil || len(in.Records) != len(out.Records) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.puts++
	for i, o := range out.Records {
		if o.ErrorCode == "" && o.SequenceNumber != "" {
			t.accepted = append(t.accepted, TapRecord{Shard: o.ShardId, SeqNum: o.SequenceNumber, Data: in.Records[i].Data})
		}
	}
}
