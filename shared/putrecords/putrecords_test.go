package putrecords

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/localtest"
)

// capture is an HTTP client that records every request and answers from a script.
type capture struct {
	mu      sync.Mutex
	bodies  [][]byte
	headers []http.Header
	status  []int // answer of each call; 200 once exhausted
}

func (c *capture) Do(r *http.Request) (*http.Response, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bodies = append(c.bodies, b)
	c.headers = append(c.headers, r.Header.Clone())
	status := http.StatusOK
	if n := len(c.bodies); n <= len(c.status) {
		status = c.status[n-1]
	}
	body := `{"FailedRecordCount":0,"Records":[]}`
	if status != http.StatusOK {
		body = `{"__type":"InternalFailure","message":"try again"}`
	}
	return &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {"application/x-amz-json-1.1"}},
		Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
}

func client(hc *capture, optFns ...func(*kinesis.Options)) *kinesis.Client {
	return kinesis.New(kinesis.Options{
		Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("k", "s", ""),
		HTTPClient: hc, BaseEndpoint: aws.String("http://127.0.0.1:1"), RetryMaxAttempts: 3,
	}, optFns...)
}

// inputs are requests as the bridge sends them, and with every member and awkward strings.
func inputs() map[string]*kinesis.PutRecordsInput {
	rng := rand.New(rand.NewPCG(1, 2))
	data := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	bridge := &kinesis.PutRecordsInput{StreamName: aws.String("nsqk-bench")}
	for i := range 500 {
		bridge.Records = append(bridge.Records, types.PutRecordsRequestEntry{Data: data(1 + i*37%4000),
			PartitionKey: aws.String(fmt.Sprintf("b%d", i%3)), ExplicitHashKey: aws.String("170141183460469231731687303715884105728")})
	}
	all := &kinesis.PutRecordsInput{DryRun: aws.Bool(false), StreamARN: aws.String("arn:aws:kinesis:us-east-1:123456789012:stream/s"),
		StreamId: aws.String("id"), StreamName: aws.String("s"), Records: []types.PutRecordsRequestEntry{
			{Data: []byte{}, PartitionKey: aws.String("k")}, {Data: data(3), PartitionKey: aws.String("user-1")},
			{Data: data(1), PartitionKey: aws.String("ü")}}}
	odd := &kinesis.PutRecordsInput{DryRun: aws.Bool(true), StreamName: aws.String(`a"b\c`), Records: []types.PutRecordsRequestEntry{
		{Data: data(2), PartitionKey: aws.String("tab\there \"quoted\" back\\slash <&> \u2028 \x7f é 😀")},
		{Data: data(5), PartitionKey: aws.String("bad utf8 \xff\xfe")}}}
	return map[string]*kinesis.PutRecordsInput{"bridge": bridge, "every member": all, "escapes": odd, "no records": {StreamName: aws.String("s"), Records: []types.PutRecordsRequestEntry{}}}
}

// The body is what the SDK's own serializer writes: byte for byte where no string needs escaping,
// the same JSON value where one does; and the request's headers are the same.
func TestBodyMatchesTheSDK(t *testing.T) {
	for name, in := range inputs() {
		t.Run(name, func(t *testing.T) {
			sdk, ours := &capture{}, &capture{}
			for _, c := range []*kinesis.Client{client(sdk), client(ours, WithEncoder)} {
				if _, err := c.PutRecords(context.Background(), in); err != nil {
					t.Fatal(err)
				}
			}
			want, got := sdk.bodies[0], ours.bodies[0]
			if name == "escapes" {
				var a, b any
				if err := json.Unmarshal(want, &a); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(got, &b); err != nil {
					t.Fatalf("not JSON: %v\n%s", err, got)
				}
				if !reflect.DeepEqual(a, b) {
					t.Fatalf("JSON differs:\nsdk  %s\nours %s", want, got)
				}
			} else if !bytes.Equal(want, got) {
				t.Fatalf("body differs:\nsdk  %.300s\nours %.300s", want, got)
			}
			if n := BodySize(in); n < len(got) {
				t.Errorf("BodySize %d < %d", n, len(got))
			}
			for _, h := range []string{"Content-Type", "X-Amz-Target", "Content-Length"} {
				if name != "escapes" && sdk.headers[0].Get(h) != ours.headers[0].Get(h) {
					t.Errorf("%s: sdk %q, ours %q", h, sdk.headers[0].Get(h), ours.headers[0].Get(h))
				}
			}
			if ours.headers[0].Get("X-Amz-Target") != "Kinesis_20131202.PutRecords" || !strings.Contains(ours.headers[0].Get("Authorization"), "Signature=") {
				t.Errorf("headers %v", ours.headers[0])
			}
		})
	}
}

// The SDK's retry sends the same body again (the stream is rewound), signed again.
func TestRetriedRequestResendsTheBody(t *testing.T) {
	hc := &capture{status: []int{http.StatusInternalServerError, http.StatusInternalServerError}}
	in := inputs()["bridge"]
	if _, err := client(hc, WithEncoder).PutRecords(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	if len(hc.bodies) != 3 {
		t.Fatalf("%d attempts, want 3", len(hc.bodies))
	}
	want := AppendBody(nil, in)
	for i, b := range hc.bodies {
		if !bytes.Equal(b, want) {
			t.Errorf("attempt %d sent %d bytes, not the body", i+1, len(b))
		}
	}
}

// Other operations still go through the SDK's protocol.
func TestOtherOperationsUnchanged(t *testing.T) {
	sdk, ours := &capture{}, &capture{}
	in := &kinesis.PutRecordInput{StreamName: aws.String("s"), PartitionKey: aws.String("k"), Data: []byte("x")}
	client(sdk).PutRecord(context.Background(), in)
	client(ours, WithEncoder).PutRecord(context.Background(), in)
	if !bytes.Equal(sdk.bodies[0], ours.bodies[0]) || ours.headers[0].Get("X-Amz-Target") != "Kinesis_20131202.PutRecord" {
		t.Fatalf("PutRecord changed: %s / %s", sdk.bodies[0], ours.bodies[0])
	}
}

// AppendBody writes every member the SDK's input types have: an SDK upgrade that adds one must
// fail here, not silently drop it.
func TestEveryMemberEncoded(t *testing.T) {
	members := func(v any) []string {
		var out []string
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			if f := rt.Field(i); f.IsExported() {
				out = append(out, f.Name)
			}
		}
		slices.Sort(out)
		return out
	}
	if got, want := members(kinesis.PutRecordsInput{}), []string{"DryRun", "Records", "StreamARN", "StreamId", "StreamName"}; !slices.Equal(got, want) {
		t.Errorf("PutRecordsInput members %v, AppendBody writes %v", got, want)
	}
	if got, want := members(types.PutRecordsRequestEntry{}), []string{"Data", "ExplicitHashKey", "PartitionKey"}; !slices.Equal(got, want) {
		t.Errorf("PutRecordsRequestEntry members %v, AppendBody writes %v", got, want)
	}
}

// Records written through the encoder into kinesalite read back intact, with their keys.
func TestKinesaliteStoresWhatWasSent(t *testing.T) {
	em := localtest.Kinesis(t, kinesislocal.Options{})
	kc := em.Client(WithEncoder)
	stream := localtest.Stream(t, kc, 2)
	in := &kinesis.PutRecordsInput{StreamName: aws.String(stream)}
	want := map[string]string{}
	for i := range 50 {
		k, d := fmt.Sprintf("user-%d-ü", i), strings.Repeat(string(rune('a'+i%26)), 1+i*31)
		want[k] = d
		in.Records = append(in.Records, types.PutRecordsRequestEntry{Data: []byte(d), PartitionKey: aws.String(k)})
	}
	out, err := kc.PutRecords(context.Background(), in)
	if err != nil || aws.ToInt32(out.FailedRecordCount) != 0 {
		t.Fatalf("PutRecords: %v %v", err, out)
	}
	recs, err := kinesislocal.ReadAll(context.Background(), kc, stream)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(want) {
		t.Fatalf("read %d records, want %d", len(recs), len(want))
	}
	for _, r := range recs {
		if d, ok := want[aws.ToString(r.PartitionKey)]; !ok || d != string(r.Data) {
			t.Errorf("record %q: %d bytes, want %d", aws.ToString(r.PartitionKey), len(r.Data), len(d))
		}
	}
}

func BenchmarkBody(b *testing.B) {
	in := inputs()["bridge"]
	size := 0
	for _, r := range in.Records {
		size += len(r.Data)
	}
	b.Run("sdk", func(b *testing.B) {
		hc := &capture{}
		c := client(hc)
		b.SetBytes(int64(size))
		for b.Loop() {
			hc.bodies, hc.headers = hc.bodies[:0], hc.headers[:0]
			c.PutRecords(context.Background(), in)
		}
	})
	b.Run("encoder", func(b *testing.B) {
		hc := &capture{}
		c := client(hc, WithEncoder)
		b.SetBytes(int64(size))
		for b.Loop() {
			hc.bodies, hc.headers = hc.bodies[:0], hc.headers[:0]
			c.PutRecords(context.Background(), in)
		}
	})
}
