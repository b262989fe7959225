package logread

import (
	"encoding/base64"
	"strconv"
	"unicode/utf8"
)

// AppendJSON appends the record as one JSON object and a newline: exactly the fields
// shard_id, sequence_number, sub_sequence_number, aggregated, partition_key, explicit_hash_key
// (string or null), arrival_time (RFC 3339, milliseconds, UTC), data_base64, and data only when
// the bytes are valid UTF-8. Strings are escaped as encoding/json does without HTML escaping
// (bytes that are not UTF-8 in a key become U+FFFD).
func AppendJSON(b []byte, r *Record) []byte {
	b = append(b, `{"shard_id":`...)
	b = appendString(b, r.ShardID)
	b = append(b, `,"sequence_number":`...)
	b = appendString(b, r.SequenceNumber)
	b = append(b, `,"sub_sequence_number":`...)
	b = strconv.AppendInt(b, int64(r.SubSequence), 10)
	b = append(b, `,"aggregated":`...)
	b = strconv.AppendBool(b, r.Aggregated)
	b = append(b, `,"partition_key":`...)
	b = appendString(b, r.PartitionKey)
	b = append(b, `,"explicit_hash_key":`...)
	if r.ExplicitHashKey == nil {
		b = append(b, "null"...)
	} else {
		b = appendString(b, r.ExplicitHashKey)
	}
	b = append(b, `,"arrival_time":"`...)
	b = r.Arrival.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, `","data_base64":"`...)
	b = base64.StdEncoding.AppendEncode(b, r.Data)
	b = append(b, '"')
	if utf8.Valid(r.Data) {
		b = append(b, `,"data":`...)
		b = appendString(b, r.Data)
	}
	return append(b, "}\n"...)
}

// AppendData appends the record's raw data and a newline (--format data).
func AppendData(b []byte, r *Record) []byte {
	b = append(b, r.Data...)
	return append(b, '\n')
}

const hexDigits = "0123456789abcdef"

// safe marks the ASCII bytes that need no escaping in a JSON string.
var safe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return
}()

// appendString quotes s as encoding/json does with SetEscapeHTML(false).
func appendString[S string | []byte](b []byte, s S) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if safe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		var r rune
		var size int
		switch v := any(s).(type) {
		case string:
			r, size = utf8.DecodeRuneInString(v[i:])
		case []byte:
			r, size = utf8.DecodeRune(v[i:])
		}
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		// U+2028 and U+2029 are valid JSON but end lines in JavaScript; encoding/json escapes them.
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
