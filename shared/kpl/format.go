package kpl

import (
	"crypto/md5"
	"unicode/utf8"
)

// Magic prefixes every KPL aggregated record.
const Magic = "\xf3\x89\x9a\xc2"

// DefaultMaxRecordSize is Kinesis' default limit on a record: data plus partition key, in bytes.
// Streams can be configured with a larger limit, hence AggregatorConfig.MaxSize.
const DefaultMaxRecordSize = 1 << 20

// MaxPartitionKeyLen is Kinesis' limit on a partition key, in characters.
const MaxPartitionKeyLen = 256

// DefaultOuterPartitionKey is the partition key of emitted aggregates unless configured otherwise:
// the KPL's choice. It only matters for routing when no explicit hash key is set.
const DefaultOuterPartitionKey = "a"

// overhead is what an aggregate adds around its protobuf: magic and MD5 digest.
const overhead = len(Magic) + md5.Size

// Protobuf tags of the fields, written and matched as single bytes: every field number here is
// below 16, so each tag is a one-byte varint. TestTagConstants checks them against protowire.
const (
	tagPartitionKeyTable    = 1<<3 | 2 // AggregatedRecord.partition_key_table, bytes
	tagExplicitHashKeyTable = 2<<3 | 2 // AggregatedRecord.explicit_hash_key_table, bytes
	tagRecords              = 3<<3 | 2 // AggregatedRecord.records, bytes
	tagPartitionKeyIndex    = 1<<3 | 0 // Record.partition_key_index, varint
	tagExplicitHashKeyIndex = 2<<3 | 0 // Record.explicit_hash_key_index, varint
	tagData                 = 3<<3 | 2 // Record.data, bytes
	tagTags                 = 4<<3 | 2 // Record.tags, bytes
	tagTagKey               = 1<<3 | 2 // Tag.key, bytes
)

// Record is one Kinesis record as written by PutRecords.
type Record struct {
	PartitionKey    string
	ExplicitHashKey string // "" = none
	Data            []byte
}

// validPartitionKey reports whether Kinesis accepts k as a partition key. Kinesis counts
// "characters"; counting UTF-16 code units is the stricter of the plausible readings (a
// supplementary-plane character counts twice), so a key accepted here is accepted there.
func validPartitionKey(k string) bool {
	if len(k) == 0 || len(k) > 4*MaxPartitionKeyLen || !utf8.ValidString(k) {
		return false
	}
	if len(k) <= MaxPartitionKeyLen {
		return true // a character never takes fewer UTF-8 bytes than UTF-16 code units
	}
	units := 0
	for _, r := range k {
		units++
		if r > 0xFFFF {
			units++
		}
	}
	return units <= MaxPartitionKeyLen
}

// maxHashKey is 2^128-1, the largest explicit hash key, in decimal.
const maxHashKey = "340282366920938463463374607431768211455"

// validExplicitHashKey reports whether k matches Kinesis' pattern 0|([1-9]\d{0,38}) and is at
// most 2^128-1.
func validExplicitHashKey(k string) bool {
	if len(k) == 0 || len(k) > len(maxHashKey) || (len(k) > 1 && k[0] == '0') {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < '0' || k[i] > '9' {
			return false
		}
	}
	// Equal-length decimal strings without leading zeros compare like their values.
	return len(k) < len(maxHashKey) || k <= maxHashKey
}
