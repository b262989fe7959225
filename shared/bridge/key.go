package bridge

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"unicode/utf8"

	"github.com/tidwall/gjson"

	"github.com/nsqk/nsqk/shared/kpl"
)

// Reason is the stable, machine-readable code of why a message was dead-lettered. It appears in
// the dead-letter envelope, in the `reason` label of nsqk_bridge_dead_lettered_total and in logs.
type Reason string

const (
	ReasonEmptyBody      Reason = "empty_body"
	ReasonInvalidJSON    Reason = "invalid_json"
	ReasonTooDeep        Reason = "too_deep"
	ReasonMissingKey     Reason = "missing_key"
	ReasonEmptyKey       Reason = "empty_key"
	ReasonKeyTooLong     Reason = "key_too_long"
	ReasonKeyNotUTF8     Reason = "key_not_utf8"
	ReasonKeyWrongType   Reason = "key_wrong_type"
	ReasonKeyControlChar Reason = "key_control_chars"
	ReasonTooLarge       Reason = "too_large"
	ReasonMaxAttempts    Reason = "max_attempts"
	ReasonLate           Reason = "late_redelivery"
)

// keyExtractor finds the partition key of a message body and classifies bad input.
type keyExtractor struct {
	path     string
	policy   MissingKeyPolicy
	fixed    string
	numeric  bool
	maxDepth int
}

func newKeyExtractor(o *Options) *keyExtractor {
	return &keyExtractor{path: o.PartitionKey, policy: o.MissingKey, fixed: o.FixedKey, numeric: o.AllowNumericKey, maxDepth: o.MaxJSONDepth}
}

// extract returns the partition key, or a reason (and a human detail) when the message must be
// dead-lettered. A body that is not a usable JSON document is always dead-lettered; a document
// without a usable key follows the missing-key policy. random reports a key made up by the random
// policy: it orders nothing and is not remembered.
func (x *keyExtractor) extract(body []byte) (key string, reason Reason, detail string, random bool) {
	if len(body) == 0 {
		return "", ReasonEmptyBody, "empty message body", false
	}
	// The depth guard runs first so the recursive validator below never recurses deeply. With no
	// more opening brackets than the limit (the common case, counted with SIMD) it cannot be hit.
	if bytes.Count(body, []byte{'{'})+bytes.Count(body, []byte{'['}) > x.maxDepth {
		if d, ok := depthWithin(body, x.maxDepth); !ok {
			return "", ReasonTooDeep, fmt.Sprintf("JSON nesting depth exceeds %d (reached %d)", x.maxDepth, d), false
		}
	}
	if !gjson.ValidBytes(body) {
		return "", ReasonInvalidJSON, "body is not valid JSON", false
	}
	r := gjson.GetBytes(body, x.path)
	switch {
	case !r.Exists():
		reason, detail = ReasonMissingKey, fmt.Sprintf("no field %q", x.path)
	case r.Type == gjson.String:
		key = r.Str
		reason, detail = checkKey(key)
	case r.Type == gjson.Number && x.numeric:
		key = r.Raw
		reason, detail = checkKey(key)
	default:
		reason, detail = ReasonKeyWrongType, fmt.Sprintf("field %q is a JSON %s, want a string", x.path, jsonType(r))
	}
	if reason == "" {
		return key, "", "", false
	}
	switch x.policy {
	case MissingKeyFixed:
		return x.fixed, "", "", false
	case MissingKeyRandom:
		return strconv.FormatUint(rand.Uint64(), 36), "", "", true
	}
	return "", reason, detail, false
}

// checkKey applies Kinesis' partition key rules (1-256 characters, counted as UTF-16 code units,
// the stricter reading, as shared/kpl does) and refuses control characters, which no well-formed
// user id contains and which break logs and tools downstream.
func checkKey(k string) (Reason, string) {
	if k == "" {
		return ReasonEmptyKey, "partition key is empty"
	}
	if !utf8.ValidString(k) {
		return ReasonKeyNotUTF8, "partition key is not valid UTF-8"
	}
	n := 0
	for _, c := range k {
		n++
		if c > 0xFFFF {
			n++ // a surrogate pair in UTF-16
		}
		if c < 0x20 || c == 0x7f {
			return ReasonKeyControlChar, fmt.Sprintf("partition key contains control character %U", c)
		}
	}
	if n > kpl.MaxPartitionKeyLen {
		return ReasonKeyTooLong, fmt.Sprintf("partition key has %d characters (UTF-16 code units), the limit is %d", n, kpl.MaxPartitionKeyLen)
	}
	return "", ""
}

func jsonType(r gjson.Result) string {
	switch r.Type {
	case gjson.Null:
		return "null"
	case gjson.False, gjson.True:
		return "boolean"
	case gjson.Number:
		return "number"
	case gjson.JSON:
		if len(r.Raw) > 0 && r.Raw[0] == '[' {
			return "array"
		}
		return "object"
	}
	return "string"
}

// special marks the bytes depthWithin must look at; everything else is skipped in a tight loop.
var special = [256]bool{'"': true, '\\': true, '{': true, '[': true, '}': true, ']': true}

// depthWithin reports whether the bracket nesting of a JSON text stays within max, ignoring
// brackets inside strings. It does not validate; it only bounds the work of the validator.
func depthWithin(b []byte, max int) (int, bool) {
	depth, inStr := 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !special[c] {
			continue
		}
		switch {
		case c == '\\':
			if inStr {
				i++ // skip the escaped byte
			}
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '{' || c == '[':
			depth++
			if depth > max {
				return depth, false
			}
		default:
			depth--
		}
	}
	return depth, true
}
