// Package putrecords encodes Kinesis PutRecords request bodies in one pass into a buffer of the
// exact size, underneath the AWS SDK's own endpoint resolution, signing, retries and transport.
// The records' data is base64-encoded with SIMD (github.com/segmentio/asm: AVX2 on amd64, NEON on
// arm64; the standard library's encoder elsewhere), about ten times faster than encoding/base64,
// which the SDK uses and which was the single largest function of the request path.
//
// The SDK's generic JSON serializer grows its buffer by doubling while it base64-encodes the
// records into it and then copies the whole body once more; for the half-megabyte bodies a busy
// bridge sends several times a second that is three copies of every byte before the SHA-256 of
// the signature reads it. Encoder replaces only that step, and only for PutRecords: the headers
// still come from the SDK's own protocol, every other operation and every response go through it
// unchanged, and the body is an ordinary seekable reader, so the SDK rewinds and re-sends it on a
// retry as before.
//
// The body is a fresh buffer per request rather than one from a pool: net/http may still be
// reading a request body after RoundTrip has returned (a server that answers before reading it
// all), so a buffer cannot be handed to the next request when the call returns.
package putrecords

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/segmentio/asm/base64"
)

// WithEncoder is a kinesis.Options function that encodes PutRecords bodies with AppendBody:
// kinesis.NewFromConfig(cfg, putrecords.WithEncoder).
func WithEncoder(o *kinesis.Options) {
	if o.Protocol != nil {
		o.Protocol = protocol{o.Protocol}
	}
}

// protocol is the SDK's awsJson1.1 protocol with PutRecords request bodies encoded here.
type protocol struct{ smithyhttp.ClientProtocol }

// empty lets the SDK's protocol set a PutRecords request's method, path and headers.
var empty = &kinesis.PutRecordsInput{}

func (p protocol) SerializeRequest(ctx context.Context, op *smithy.OperationSchema, in smithy.Serializable, req *smithyhttp.Request) error {
	pr, ok := in.(*kinesis.PutRecordsInput)
	if !ok {
		return p.ClientProtocol.SerializeRequest(ctx, op, in, req)
	}
	if err := p.ClientProtocol.SerializeRequest(ctx, op, empty, req); err != nil {
		return err
	}
	sreq, err := req.SetStream(bytes.NewReader(AppendBody(nil, pr)))
	if err != nil {
		return fmt.Errorf("set stream: %w", err)
	}
	*req = *sreq
	return nil
}

// AppendBody appends the awsJson1.1 body of a PutRecords request to dst, growing it at most once.
// It writes every member of PutRecordsInput and PutRecordsRequestEntry the SDK version in go.mod
// has (a test fails when an SDK upgrade adds one).
func AppendBody(dst []byte, in *kinesis.PutRecordsInput) []byte {
	if need := BodySize(in); cap(dst)-len(dst) < need {
		dst = append(make([]byte, 0, len(dst)+need), dst...)
	}
	dst = append(dst, '{')
	comma := false
	field := func(name string) {
		if comma {
			dst = append(dst, ',')
		}
		comma = true
		dst = append(dst, '"')
		dst = append(dst, name...)
		dst = append(dst, `":`...)
	}
	if in.DryRun != nil {
		field("DryRun")
		if *in.DryRun {
			dst = append(dst, "true"...)
		} else {
			dst = append(dst, "false"...)
		}
	}
	if in.Records != nil {
		field("Records")
		dst = append(dst, '[')
		for i := range in.Records {
			r := &in.Records[i]
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, '{')
			c := false
			if r.Data != nil {
				dst = append(dst, `"Data":"`...)
				n := len(dst)
				dst = dst[:n+base64.StdEncoding.EncodedLen(len(r.Data))]
				base64.StdEncoding.Encode(dst[n:], r.Data)
				dst = append(dst, '"')
				c = true
			}
			if r.ExplicitHashKey != nil {
				if c {
					dst = append(dst, ',')
				}
				dst = append(dst, `"ExplicitHashKey":`...)
				dst = appendString(dst, *r.ExplicitHashKey)
				c = true
			}
			if r.PartitionKey != nil {
				if c {
					dst = append(dst, ',')
				}
				dst = append(dst, `"PartitionKey":`...)
				dst = appendString(dst, *r.PartitionKey)
			}
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	for _, f := range []struct {
		name string
		v    *string
	}{{"StreamARN", in.StreamARN}, {"StreamId", in.StreamId}, {"StreamName", in.StreamName}} {
		if f.v != nil {
			field(f.name)
			dst = appendString(dst, *f.v)
		}
	}
	return append(dst, '}')
}

// BodySize returns an upper bound of len(AppendBody(nil, in)), exact unless a string needs
// escaping.
func BodySize(in *kinesis.PutRecordsInput) int {
	n := len(`{"DryRun":false,"Records":[],"StreamARN":,"StreamId":,"StreamName":}`)
	for _, s := range []*string{in.StreamARN, in.StreamId, in.StreamName} {
		if s != nil {
			n += stringSize(*s)
		}
	}
	for i := range in.Records {
		r := &in.Records[i]
		n += len(`{"Data":"","ExplicitHashKey":,"PartitionKey":},`) + base64.StdEncoding.EncodedLen(len(r.Data))
		if r.ExplicitHashKey != nil {
			n += stringSize(*r.ExplicitHashKey)
		}
		if r.PartitionKey != nil {
			n += stringSize(*r.PartitionKey)
		}
	}
	return n
}

// plain reports whether s can be written between quotes as it is: printable ASCII without '"'
// and '\' (partition keys, hash keys and stream names nearly always are).
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

func stringSize(s string) int {
	if plain(s) {
		return len(s) + 2
	}
	return 6*len(s) + 2 // \u00XX per byte at worst
}

// appendString appends s as a JSON string; anything but plain ASCII is escaped by encoding/json
// (invalid UTF-8 becomes U+FFFD, as in the SDK's encoder).
func appendString(dst []byte, s string) []byte {
	if plain(s) {
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"')
	}
	b, _ := json.Marshal(s) // a string always marshals
	return append(dst, b...)
}
