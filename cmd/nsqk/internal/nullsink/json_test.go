package nullsink

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// stdRequest is the reference decoding with encoding/json.
type stdRequest struct {
	StreamName *string
	StreamARN  *string
	Records    []struct {
		Data            []byte
		PartitionKey    *string
		ExplicitHashKey *string
	}
}

var jsonSeeds = []string{
	`{"Records":[{"Data":"aGVsbG8=","PartitionKey":"k1"},{"Data":"","PartitionKey":"k2","ExplicitHashKey":"42"}],"StreamName":"s"}`,
	`{"StreamARN":"arn:aws:kinesis:us-east-1:123456789012:stream/s","Records":[{"PartitionKey":"a","Data":"AAEC"}]}`,
	` { "StreamName" : "s" , "Records" : [ { "Data" : "AA==" , "PartitionKey" : "\u00e9\n" , "Extra" : {"x":[1,2.5e3,-0.1,true,false,null,"y"]} } ] , "More": [] } `,
	`{"StreamName":"s\/x","Records":[{"Data":"QUJD\/w==","PartitionKey":"p"}]}`,
	`{"StreamName":"s","Records":[]}`,
	`{"StreamName":null,"Records":null}`,
	`{"Records":[{"Data":null,"PartitionKey":null,"ExplicitHashKey":null}]}`,
	`{}`,
	`{"StreamName":"s",}`,
	`{"StreamName":"s"} x`,
	`{"Records":[{"Data":"!!!!"}]}`,
	`{"Records":[{"Data":"AA==","PartitionKey":"a\x01"}]}`,
	`{"a":01}`,
	`{"a":1.}`,
	`{"a":-}`,
	`{"a":"\x"}`,
	`[1]`,
	``,
}

func TestParsePutRecordsMatchesEncodingJSON(t *testing.T) {
	for _, s := range jsonSeeds {
		checkAgainstStd(t, []byte(s))
	}
}

func FuzzParsePutRecords(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkAgainstStd(t, body) })
}

// checkAgainstStd: whatever the fast reader accepts, encoding/json accepts with the same values;
// whatever encoding/json rejects as syntax, the fast reader rejects.
func checkAgainstStd(t *testing.T, body []byte) {
	t.Helper()
	var req putRecordsRequest
	_, err := parsePutRecords(body, &req, nil)
	if !json.Valid(body) {
		if err == nil {
			t.Fatalf("%q: accepted invalid JSON", body)
		}
		return
	}
	if err != nil || foldedNames(body) {
		return // valid JSON the sink does not accept (wrong shapes, bad base64), or member names
		// encoding/json matches case-insensitively (Kinesis, like the sink, does not)
	}
	var std stdRequest
	if jerr := json.Unmarshal(body, &std); jerr != nil {
		t.Fatalf("%q: fast reader accepted what encoding/json rejects: %v", body, jerr)
	}
	if bytes.Count(body, []byte(`"Records"`)) > 1 || !utf8.Valid(body) {
		return // duplicate members or invalid UTF-8: the two legitimately differ
	}
	eqStr := func(what string, got []byte, want *string) {
		if (got == nil) != (want == nil) || want != nil && string(got) != *want {
			t.Fatalf("%q: %s = %q, encoding/json %v", body, what, got, want)
		}
	}
	eqStr("StreamName", req.StreamName, std.StreamName)
	eqStr("StreamARN", req.StreamARN, std.StreamARN)
	if len(req.Records) != len(std.Records) {
		t.Fatalf("%q: %d records, encoding/json %d", body, len(req.Records), len(std.Records))
	}
	for i, e := range req.Records {
		w := std.Records[i]
		if !bytes.Equal(e.Data, w.Data) {
			t.Fatalf("%q: record %d data %q, encoding/json %q", body, i, e.Data, w.Data)
		}
		eqStr("PartitionKey", e.PartitionKey, w.PartitionKey)
		eqStr("ExplicitHashKey", e.ExplicitHashKey, w.ExplicitHashKey)
	}
}

// foldedNames reports whether a member name differs from one the sink reads only in case
// (encoding/json matches names case-insensitively; Kinesis, like the sink, does not).
func foldedNames(body []byte) bool {
	lower := bytes.ToLower(body)
	for _, n := range []string{"StreamName", "StreamARN", "Records", "Data", "PartitionKey", "ExplicitHashKey"} {
		if bytes.Count(lower, bytes.ToLower([]byte(n))) != bytes.Count(body, []byte(n)) {
			return true
		}
	}
	return false
}

func TestParsePutRecordsReusesBuffer(t *testing.T) {
	body := []byte(`{"StreamName":"s","Records":[{"Data":"aGVsbG8=","PartitionKey":"k"},{"Data":"d29ybGQ=","PartitionKey":"k"}]}`)
	var req putRecordsRequest
	buf, err := parsePutRecords(body, &req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(req.Records[0].Data) != "hello" || string(req.Records[1].Data) != "world" {
		t.Fatalf("%q %q", req.Records[0].Data, req.Records[1].Data)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if buf, err = parsePutRecords(body, &req, buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 { // the closure of object() may escape; nothing per record
		t.Fatalf("%v allocations per parse", allocs)
	}
}

func TestHasControl(t *testing.T) {
	for n := 0; n < 20; n++ {
		b := bytes.Repeat([]byte("A"), n)
		if hasControl(b) {
			t.Fatalf("%q", b)
		}
		for i := range b {
			for _, c := range []byte{0, 0x1f, '\n'} {
				b2 := bytes.Clone(b)
				b2[i] = c
				if !hasControl(b2) {
					t.Fatalf("%q", b2)
				}
			}
			for _, c := range []byte{0x20, 0x7f, 0x80, 0x9f, 0xff} {
				b2 := bytes.Clone(b)
				b2[i] = c
				if hasControl(b2) {
					t.Fatalf("%q", b2)
				}
			}
		}
	}
}
