package bridge

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"
)

// An envelope that would exceed nsqd's --max-msg-size carries a truncated body with the original's
// size and SHA-256; one that fits carries the body whole.
func TestFitEnvelopeTruncatesOnlyWhatMustBe(t *testing.T) {
	const limit = 64 << 10
	for _, tc := range []struct {
		name  string
		body  []byte
		trunc bool
	}{
		{"small utf8", []byte(`{"user_id":"x"}`), false},
		{"big utf8", []byte(`{"pad":"` + strings.Repeat("é", 100<<10) + `"}`), true},
		{"big binary", bytes.Repeat([]byte{0xff, 0x00, 0x80}, 60<<10), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &nsq.Message{ID: nsq.MessageID{'0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'a', 'b', 'c', 'd', 'e', 'f'}, Body: tc.body, Timestamp: time.Now().UnixNano()}
			b, err := fitEnvelope(envelopeFor(m, "t", "c", ReasonTooLarge, "too large", time.Now()), tc.body, limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > limit {
				t.Fatalf("envelope of %d bytes over the %d limit", len(b), limit)
			}
			var env Envelope
			if err := json.Unmarshal(b, &env); err != nil {
				t.Fatal(err)
			}
			if env.BodyTruncated != tc.trunc {
				t.Fatalf("truncated = %v", env.BodyTruncated)
			}
			got := env.BodyBase64
			if env.Body != nil {
				got = []byte(*env.Body)
			}
			if !tc.trunc {
				if !bytes.Equal(got, tc.body) || env.BodySize != 0 || env.BodySHA256 != "" {
					t.Fatalf("whole body expected, got %d bytes, size %d, sha %q", len(got), env.BodySize, env.BodySHA256)
				}
				return
			}
			sum := sha256.Sum256(tc.body)
			if env.BodySize != len(tc.body) || env.BodySHA256 != hex.EncodeToString(sum[:]) {
				t.Fatalf("size %d sha %s do not describe the original", env.BodySize, env.BodySHA256)
			}
			if len(got) == 0 || !bytes.HasPrefix(tc.body, got) || len(got) < limit/4 {
				t.Fatalf("kept %d bytes, not a useful prefix of the original", len(got))
			}
		})
	}
}
