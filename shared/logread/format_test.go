package logread

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// viaEncodingJSON is the reference: the same object built with encoding/json.
func viaEncodingJSON(t testing.TB, r *Record) []byte {
	t.Helper()
	type out struct {
		ShardID         string  `json:"shard_id"`
		SequenceNumber  string  `json:"sequence_number"`
		SubSequence     int     `json:"sub_sequence_number"`
		Aggregated      bool    `json:"aggregated"`
		PartitionKey    string  `json:"partition_key"`
		ExplicitHashKey *string `json:"explicit_hash_key"`
		ArrivalTime     string  `json:"arrival_time"`
		DataBase64      string  `json:"data_base64"`
		Data            *string `json:"data,omitempty"`
	}
	o := out{ShardID: r.ShardID, SequenceNumber: r.SequenceNumber, SubSequence: r.SubSequence, Aggregated: r.Aggregated,
		PartitionKey: string(r.PartitionKey), ArrivalTime: r.Arrival.UTC().Format("2006-01-02T15:04:05.000Z07:00"),
		DataBase64: base64.StdEncoding.EncodeToString(r.Data)}
	if r.ExplicitHashKey != nil {
		s := string(r.ExplicitHashKey)
		o.ExplicitHashKey = &s
	}
	if utf8.Valid(r.Data) {
		s := string(r.Data)
		o.Data = &s
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(o); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	arrival := time.Date(2026, 12, 6, 7, 8, 9, 123456789, time.FixedZone("x", 3600))
	for _, s := range []string{"", "plain", `quo"te\back`, "tab\tnl\ncr\r\x00\x1f\x7f", "<html>&", "é ü 日本 🎉",
		"bad\xffutf8", "\u2028\u2029", "trunc\xe6\x97", strings.Repeat("x", 300)} {
		r := &Record{ShardID: "shardId-000000000001", SequenceNumber: "4959", SubSequence: 3, Aggregated: true,
			PartitionKey: []byte(s), ExplicitHashKey: []byte(s), Arrival: arrival, Data: []byte(s)}
		want := viaEncodingJSON(t, r)
		if got := AppendJSON(nil, r); !bytes.Equal(got, want) {
			t.Errorf("%q:\n got %s\nwant %s", s, got, want)
		}
		r.ExplicitHashKey, r.Aggregated, r.SubSequence = nil, false, 0
		if got, want := AppendJSON(nil, r), viaEncodingJSON(t, r); !bytes.Equal(got, want) {
			t.Errorf("%q without EHK:\n got %s\nwant %s", s, got, want)
		}
	}
}

func FuzzAppendJSON(f *testing.F) {
	f.Add([]byte("key"), []byte(`{"user_id":"u1"}`))
	f.Add([]byte("\xff"), []byte("\x00\xe2\x80\xa8"))
	f.Fuzz(func(t *testing.T, key, data []byte) {
		r := &Record{ShardID: "s", SequenceNumber: "1", PartitionKey: key, Arrival: time.Unix(0, 0), Data: data}
		if got, want := AppendJSON(nil, r), viaEncodingJSON(t, r); !bytes.Equal(got, want) {
			t.Errorf("got %s\nwant %s", got, want)
		}
	})
}
