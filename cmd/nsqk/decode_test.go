package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/nsqk/nsqk/shared/kpl/kpltest"
)

type outLine struct {
	Aggregated bool             `json:"aggregated"`
	Records    []kpltest.Record `json:"records"`
	Error      *string          `json:"error"`
}

// parseOutput checks that every output line is exactly the documented object (keys, order, no
// extra fields, records never null) and decodes it.
func parseOutput(t *testing.T, out string) []outLine {
	t.Helper()
	if !strings.HasSuffix(out, "\n") {
		t.Fatalf("output does not end with a newline: %q", out)
	}
	var lines []outLine
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if keys := objectKeys(t, l); keys != "aggregated,records,error" {
			t.Fatalf("line keys %q: %s", keys, l)
		}
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		var o outLine
		if err := dec.Decode(&o); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		if o.Records == nil {
			t.Fatalf("records is null: %s", l)
		}
		var raw struct{ Records []json.RawMessage }
		if err := json.Unmarshal([]byte(l), &raw); err != nil {
			t.Fatal(err)
		}
		for _, r := range raw.Records {
			if keys := objectKeys(t, string(r)); keys != "partition_key,explicit_hash_key,data_base64" {
				t.Fatalf("record keys %q: %s", keys, r)
			}
		}
		lines = append(lines, o)
	}
	return lines
}

// objectKeys lists the top-level keys of a JSON object in order.
func objectKeys(t *testing.T, obj string) string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(obj))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %s", obj)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return strings.Join(keys, ",")
}

func decodeString(t *testing.T, in string) []outLine {
	t.Helper()
	var out bytes.Buffer
	if err := runDecode(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	return parseOutput(t, out.String())
}

func TestDecodeVectors(t *testing.T) {
	vs := kpltest.Load(t)
	var in strings.Builder
	for _, v := range vs {
		in.WriteString(v.AggregatedBase64 + "\n")
	}
	got := decodeString(t, in.String())
	if len(got) != len(vs) {
		t.Fatalf("%d output lines for %d input lines", len(got), len(vs))
	}
	for i, v := range vs {
		g, e := got[i], v.Expect
		if g.Aggregated != e.Aggregated {
			t.Errorf("%s: aggregated %t, want %t", v.Name, g.Aggregated, e.Aggregated)
		}
		if (g.Error != nil) != !e.Valid {
			t.Errorf("%s: error %v, want an error: %t", v.Name, show(g.Error), !e.Valid)
		}
		if len(g.Records) != len(e.Records) {
			t.Errorf("%s: %d records, want %d", v.Name, len(g.Records), len(e.Records))
			continue
		}
		for j, w := range e.Records {
			r := g.Records[j]
			if r.DataBase64 != w.DataBase64 {
				t.Errorf("%s record %d: data %q, want %q", v.Name, j, r.DataBase64, w.DataBase64)
			}
			if !e.Aggregated {
				// The outer key in expect is not part of the data: the command prints null.
				if r.PartitionKey != nil || r.ExplicitHashKey != nil || r.DataBase64 != v.AggregatedBase64 {
					t.Errorf("%s: pass-through record %+v, want null keys and the input data", v.Name, r)
				}
				continue
			}
			if show(r.PartitionKey) != show(w.PartitionKey) || show(r.ExplicitHashKey) != show(w.ExplicitHashKey) {
				t.Errorf("%s record %d: keys %s/%s, want %s/%s", v.Name, j,
					show(r.PartitionKey), show(r.ExplicitHashKey), show(w.PartitionKey), show(w.ExplicitHashKey))
			}
		}
	}
}

func show(s *string) string {
	if s == nil {
		return "null"
	}
	b, _ := json.Marshal(*s)
	return string(b)
}

func TestDecodeInputForms(t *testing.T) {
	// aws-lambda-fanout writes this 20-byte record unpadded.
	const unpadded, padded = "84mawtQdjNmPALIE6YAJmOz4Qn4", "84mawtQdjNmPALIE6YAJmOz4Qn4="
	in := strings.Join([]string{
		unpadded,
		"  \t" + padded + "  \r", // surrounding whitespace and CRLF
		"not base64!",
		"", // empty line: zero-byte record
		"QQ=",
		"aGVsbG8",    // unpadded "hello"
		"aGVs bG8=",  // inner space: invalid
		"aGVsbG8=\r", // last line, no final newline
	}, "\n")
	got := decodeString(t, in)
	if len(got) != 8 {
		t.Fatalf("%d output lines, want 8", len(got))
	}
	pass := func(i int, data string) {
		t.Helper()
		g := got[i]
		if g.Aggregated || g.Error != nil || len(g.Records) != 1 || g.Records[0].PartitionKey != nil ||
			g.Records[0].DataBase64 != base64.StdEncoding.EncodeToString([]byte(data)) {
			t.Errorf("line %d: %+v, want a pass-through of %q", i, g, data)
		}
	}
	bad := func(i int) {
		t.Helper()
		g := got[i]
		if g.Aggregated || g.Error == nil || !strings.Contains(*g.Error, "base64") || len(g.Records) != 0 {
			t.Errorf("line %d: %+v, want a base64 error with no records", i, g)
		}
	}
	zero, _ := base64.StdEncoding.DecodeString(padded)
	pass(0, string(zero))
	pass(1, string(zero))
	bad(2)
	pass(3, "")
	bad(4)
	pass(5, "hello")
	bad(6)
	pass(7, "hello")

	// A final newline does not make an extra line; blank input makes none.
	if got := decodeString(t, "aGVsbG8=\n"); len(got) != 1 {
		t.Errorf("%d lines for one line with a final newline", len(got))
	}
	var out bytes.Buffer
	if err := runDecode(strings.NewReader(""), &out); err != nil || out.Len() != 0 {
		t.Errorf("empty input: %q, %v", out.String(), err)
	}
}

// TestDecodeLargeRecords: lines longer than the reader's buffer (a full 1 MiB aggregate is a
// 1.4 MB line), and a line over the limit, which is reported and skipped.
func TestDecodeLargeRecords(t *testing.T) {
	a := kpl.NewAggregator(kpl.AggregatorConfig{MaxSize: 4 << 20})
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1000)
	n := 0
	for a.Add("key-"+string(rune('a'+n%26)), "", payload) == nil {
		n++
	}
	big := a.Flush(nil).Data
	if len(big) < 3<<20 {
		t.Fatalf("aggregate of %d bytes, want > 3 MiB", len(big))
	}
	b64 := base64.StdEncoding.EncodeToString(big)
	in := b64 + "\n" + strings.Repeat("A", maxLine+1) + "\n" + b64
	got := decodeString(t, in)
	if len(got) != 3 {
		t.Fatalf("%d output lines, want 3", len(got))
	}
	for _, i := range []int{0, 2} {
		if !got[i].Aggregated || got[i].Error != nil || len(got[i].Records) != n {
			t.Errorf("line %d: aggregated %t, %d records (want %d), error %v", i, got[i].Aggregated, len(got[i].Records), n, show(got[i].Error))
		}
	}
	if got[1].Error == nil || !strings.Contains(*got[1].Error, "longer than") || len(got[1].Records) != 0 {
		t.Errorf("over-long line: %+v", got[1])
	}
}

type failingReader struct{ data io.Reader }

func (r failingReader) Read(p []byte) (int, error) {
	n, err := r.data.Read(p)
	if errors.Is(err, io.EOF) {
		return n, errors.New("disk on fire")
	}
	return n, err
}

func TestDecodeReadError(t *testing.T) {
	var out bytes.Buffer
	err := runDecode(failingReader{strings.NewReader("aGVsbG8=\n")}, &out)
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("err = %v, want the read error", err)
	}
	if got := parseOutput(t, out.String()); len(got) != 1 {
		t.Errorf("lines before the error not written: %q", out.String())
	}
}

func TestDecodeRejectsArguments(t *testing.T) {
	if code := run(context.Background(), []string{"decode", "file.b64"}); code == 0 {
		t.Error("decode with a positional argument exited 0")
	}
}
