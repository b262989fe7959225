package kpl

import (
	"crypto/md5"

	"google.golang.org/protobuf/encoding/protowire"
)

// AggregatorConfig configures an Aggregator. The zero value is the KPL's behaviour.
type AggregatorConfig struct {
	// MaxSize limits len(Data)+len(PartitionKey) of the emitted record (what Kinesis limits);
	// 0 = DefaultMaxRecordSize.
	MaxSize int
	// MaxRecords limits the user records per aggregate; 0 = no limit.
	MaxRecords int
	// OuterPartitionKey is the partition key of emitted aggregates; "" = DefaultOuterPartitionKey.
	// It counts against MaxSize.
	OuterPartitionKey string
	// OuterExplicitHashKey is the explicit hash key of emitted aggregates; "" = the first user
	// record's explicit hash key if it has one, else none. With no explicit hash key every
	// aggregate hashes by OuterPartitionKey, i.e. all of them go to the same shard.
	OuterExplicitHashKey string
	// RawSingle emits an aggregate holding exactly one user record as that plain record (its own
	// keys, its data unframed), as the KPL does: smaller, and readable by any consumer. A record
	// whose data is itself a valid aggregate is still wrapped, or consumers would expand it.
	RawSingle bool
}

// Aggregator packs user records into KPL aggregated records. It is not safe for concurrent use.
//
// Add appends each record's protobuf encoding to internal buffers, so that Size is exact at all
// times and Flush only has to concatenate, hash and copy. After a few flushes the buffers and
// key maps have reached their working size and Add no longer allocates.
type Aggregator struct {
	maxSize    int
	maxRecords int
	outerPK    string
	outerEHK   string
	rawSingle  bool

	pkIndex  keyIndex
	ehkIndex keyIndex
	pkTable  []byte // encoded partition_key_table fields
	ehkTable []byte // encoded explicit_hash_key_table fields
	records  []byte // encoded records fields
	n        int    // user records held

	// The first user record, for RawSingle emission and the default outer explicit hash key.
	firstPK, firstEHK string
	firstData         int  // offset of its data in records
	firstRaw          bool // emit it raw if it stays alone
}

// NewAggregator returns an empty Aggregator. It panics if cfg is invalid (negative limits or keys
// Kinesis would reject): that is a programming error, not a data error.
func NewAggregator(cfg AggregatorConfig) *Aggregator {
	if cfg.MaxSize < 0 || cfg.MaxRecords < 0 {
		panic("kpl: NewAggregator: negative MaxSize or MaxRecords")
	}
	if cfg.MaxSize == 0 {
		cfg.MaxSize = DefaultMaxRecordSize
	}
	a := &Aggregator{
		maxSize:    cfg.MaxSize,
		maxRecords: cfg.MaxRecords,
		rawSingle:  cfg.RawSingle,
		pkIndex:    newKeyIndex(),
		ehkIndex:   newKeyIndex(),
	}
	a.setOuterKeys(cfg.OuterPartitionKey, cfg.OuterExplicitHashKey)
	return a
}

// SetOuterKeys sets the keys of the aggregates emitted from now on, with the meaning of
// AggregatorConfig.OuterPartitionKey and OuterExplicitHashKey ("" = default); they stay in force
// across Flush and Reset. It panics unless the aggregator is empty (Len() == 0), because Size
// already counts the old partition key, and on keys Kinesis would reject.
func (a *Aggregator) SetOuterKeys(partitionKey, explicitHashKey string) {
	if a.n != 0 {
		panic("kpl: SetOuterKeys on a non-empty Aggregator")
	}
	a.setOuterKeys(partitionKey, explicitHashKey)
}

func (a *Aggregator) setOuterKeys(pk, ehk string) {
	if pk == "" {
		pk = DefaultOuterPartitionKey
	}
	if !validPartitionKey(pk) {
		panic("kpl: invalid outer partition key")
	}
	if ehk != "" && !validExplicitHashKey(ehk) {
		panic("kpl: invalid outer explicit hash key")
	}
	a.outerPK, a.outerEHK = pk, ehk
}

// Len returns the number of user records held.
func (a *Aggregator) Len() int { return a.n }

// Size returns exactly what the record Flush would emit now counts against MaxSize:
// len(Data)+len(PartitionKey); 0 when empty.
func (a *Aggregator) Size() int {
	switch {
	case a.n == 0:
		return 0
	case a.n == 1 && a.firstRaw:
		return len(a.firstPK) + len(a.records) - a.firstData
	default:
		return a.aggregateSize()
	}
}

func (a *Aggregator) aggregateSize() int {
	return overhead + len(a.pkTable) + len(a.ehkTable) + len(a.records) + len(a.outerPK)
}

// Add appends a user record; explicitHashKey "" means none. On error nothing changes:
// ErrFull (flush, then add again), ErrTooLarge (cannot fit even alone), ErrInvalidPartitionKey,
// ErrInvalidExplicitHashKey. data is copied; the key strings are kept until Flush or Reset.
func (a *Aggregator) Add(partitionKey, explicitHashKey string, data []byte) error {
	if !validPartitionKey(partitionKey) {
		return ErrInvalidPartitionKey
	}
	if explicitHashKey != "" && !validExplicitHashKey(explicitHashKey) {
		return ErrInvalidExplicitHashKey
	}
	return a.add(partitionKey, explicitHashKey, explicitHashKey != "", data)
}

// add is Add without key validation, and with explicit hash key presence separate from its value
// so that tests can re-aggregate whatever a de-aggregation produced.
func (a *Aggregator) add(partitionKey, explicitHashKey string, hasEHK bool, data []byte) error {
	// grow is what this record adds to the aggregate's size: new key table entries and the
	// records field.
	grow := 0
	pkEntry := 1 + sizeBytes(len(partitionKey))
	pkIdx, pkKnown, pkPos, pkHash := a.pkIndex.find(partitionKey)
	if !pkKnown {
		pkIdx = uint64(a.pkIndex.len())
		grow += pkEntry
	}
	var ehkEntry int
	var ehkIdx, ehkHash uint64
	var ehkPos int
	ehkKnown := true
	if hasEHK {
		ehkEntry = 1 + sizeBytes(len(explicitHashKey))
		if ehkIdx, ehkKnown, ehkPos, ehkHash = a.ehkIndex.find(explicitHashKey); !ehkKnown {
			ehkIdx = uint64(a.ehkIndex.len())
			grow += ehkEntry
		}
	}
	msgLen := 1 + sizeVarint(pkIdx) + 1 + sizeBytes(len(data))
	if hasEHK {
		msgLen += 1 + sizeVarint(ehkIdx)
	}
	grow += 1 + sizeBytes(msgLen)

	// The common case, a record that fits, needs no more checks: alone it would be no larger.
	raw := false
	if a.n == 0 || a.aggregateSize()+grow > a.maxSize || (a.maxRecords > 0 && a.n >= a.maxRecords) {
		// Alone, the record's Record message has both indices 0 (one-byte varints).
		msgAlone := 1 + 1 + 1 + sizeBytes(len(data))
		if hasEHK {
			msgAlone += 1 + 1
		}
		alone := overhead + len(a.outerPK) + pkEntry + ehkEntry + 1 + sizeBytes(msgAlone)
		raw = a.rawSingle && !IsAggregated(data) // a record that is itself an aggregate is wrapped
		if raw {
			alone = len(partitionKey) + len(data)
		}
		if alone > a.maxSize {
			return ErrTooLarge
		}
		if a.n > 0 {
			return ErrFull
		}
	}

	if !pkKnown {
		a.pkIndex.insert(partitionKey, pkPos, pkHash)
		a.pkTable = append(a.pkTable, tagPartitionKeyTable)
		a.pkTable = protowire.AppendString(a.pkTable, partitionKey)
	}
	if !ehkKnown {
		a.ehkIndex.insert(explicitHashKey, ehkPos, ehkHash)
		a.ehkTable = append(a.ehkTable, tagExplicitHashKeyTable)
		a.ehkTable = protowire.AppendString(a.ehkTable, explicitHashKey)
	}
	r := append(a.records, tagRecords)
	r = appendVarint(r, uint64(msgLen))
	r = append(r, tagPartitionKeyIndex)
	r = appendVarint(r, pkIdx)
	if hasEHK {
		r = append(r, tagExplicitHashKeyIndex)
		r = appendVarint(r, ehkIdx)
	}
	r = append(r, tagData)
	r = appendVarint(r, uint64(len(data)))
	if a.n == 0 {
		a.firstPK, a.firstEHK, a.firstData, a.firstRaw = partitionKey, explicitHashKey, len(r), raw
	}
	a.records = append(r, data...)
	a.n++
	return nil
}

// Flush returns the record holding everything added since the last Flush or Reset, then resets
// the aggregator (keeping its memory and outer keys). On an empty aggregator it returns the zero
// Record and leaves dst alone.
//
// The record's data is written at the start of dst's backing array: Data is
// append(dst[:0], ...), so dst's length and contents are ignored and its capacity reused, grown
// if too small. Pass back the previous Data (or any spare buffer) to flush without allocating,
// but never a buffer whose record is still in use (e.g. in a PutRecords request in flight).
func (a *Aggregator) Flush(dst []byte) Record {
	if a.n == 0 {
		return Record{}
	}
	var rec Record
	if a.n == 1 && a.firstRaw {
		rec = Record{
			PartitionKey:    a.firstPK,
			ExplicitHashKey: a.firstEHK,
			Data:            append(dst[:0], a.records[a.firstData:]...),
		}
	} else {
		// Sized once: appending piece by piece to a small dst (nil, from a caller that keeps no
		// spare buffer) would grow and copy it several times per aggregate.
		if size := a.aggregateSize() - len(a.outerPK); cap(dst) < size {
			dst = make([]byte, 0, size)
		}
		out := append(dst[:0], Magic...)
		out = append(out, a.pkTable...)
		out = append(out, a.ehkTable...)
		out = append(out, a.records...)
		sum := md5.Sum(out[len(Magic):])
		out = append(out, sum[:]...)
		rec = Record{PartitionKey: a.outerPK, ExplicitHashKey: a.outerEHK, Data: out}
		if rec.ExplicitHashKey == "" {
			rec.ExplicitHashKey = a.firstEHK
		}
	}
	a.Reset()
	return rec
}

// Reset drops the records held, keeping the memory and the outer keys.
func (a *Aggregator) Reset() {
	a.pkIndex.reset()
	a.ehkIndex.reset()
	a.pkTable = a.pkTable[:0]
	a.ehkTable = a.ehkTable[:0]
	a.records = a.records[:0]
	a.n = 0
	a.firstPK, a.firstEHK, a.firstData, a.firstRaw = "", "", 0, false
}

// appendVarint is protowire.AppendVarint with the one- and two-byte cases inlined: key indexes
// and the lengths of records of up to 16 KiB, i.e. nearly every varint Add writes.
func appendVarint(b []byte, v uint64) []byte {
	switch {
	case v < 1<<7:
		return append(b, byte(v))
	case v < 1<<14:
		return append(b, byte(v)|0x80, byte(v>>7))
	}
	return protowire.AppendVarint(b, v)
}

// sizeVarint is protowire.SizeVarint with the same fast paths.
func sizeVarint(v uint64) int {
	switch {
	case v < 1<<7:
		return 1
	case v < 1<<14:
		return 2
	}
	return protowire.SizeVarint(v)
}

// sizeBytes is protowire.SizeBytes (length varint + n) with the fast paths.
func sizeBytes(n int) int { return sizeVarint(uint64(n)) + n }
