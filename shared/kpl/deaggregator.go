package kpl

import (
	"bytes"
	"crypto/md5"

	"google.golang.org/protobuf/encoding/protowire"
)

// UserRecord is one user record of a Kinesis record. All slices alias the input data, with their
// capacity clipped to their length.
type UserRecord struct {
	// SubSequence is the record's index within the aggregate (0 for a pass-through record).
	SubSequence int
	// PartitionKey is nil for a pass-through record (the Kinesis record's own key applies);
	// otherwise the key table entry, non-nil even if empty.
	PartitionKey []byte
	// ExplicitHashKey is nil when the record has no explicit_hash_key_index (presence, not
	// value 0); otherwise the key table entry, non-nil even if empty.
	ExplicitHashKey []byte
	// Data is the user data; for a pass-through record, the Kinesis record's data itself.
	Data []byte
}

// span locates a length-delimited field's value in the protobuf being expanded.
type span struct{ start, end int }

// Deaggregator expands KPL aggregated records. Its zero value is ready to use; reusing one keeps
// its scratch (the offsets of key table entries and records, no references to the input), so
// that with enough capacity in dst Deaggregate does not allocate. It is not safe for concurrent
// use.
type Deaggregator struct {
	pks, ehks, recs []span // key table entries and records fields, in order
}

// Deaggregate appends the user records of one Kinesis record's data to dst and returns it.
//
// aggregated reports whether data is a KPL aggregate (see the package rules). When it is not,
// exactly one pass-through record (PartitionKey nil, Data = data) is appended. err is non-nil only
// for an aggregate that cannot be fully expanded: it is then an *IndexError and out holds the
// records before the fault. Records are never partly appended otherwise: a protobuf error found
// after some records were appended still turns the whole input into a pass-through record.
// Deaggregate never panics.
func (d *Deaggregator) Deaggregate(dst []UserRecord, data []byte) (out []UserRecord, aggregated bool, err error) {
	body, ok := verifiedBody(data)
	if ok && d.scan(body) {
		recs, parsed, ierr := d.expand(dst, body, true)
		if parsed {
			if ierr != nil {
				return recs, true, ierr
			}
			return recs, true, nil // not ierr: a nil *IndexError is a non-nil error
		}
		// Forget what expand appended before finding the parse error, so that the unused
		// capacity does not keep the input alive.
		clear(recs[len(dst):])
	}
	return append(dst, UserRecord{Data: data}), false, nil
}

// Deaggregate is Deaggregator.Deaggregate into a new slice, with a fresh Deaggregator.
func Deaggregate(data []byte) ([]UserRecord, bool, error) {
	var d Deaggregator
	return d.Deaggregate(nil, data)
}

// IsAggregated reports whether data is a KPL aggregate: magic, length, MD5 and a protobuf that
// parses with every required field. An aggregate with an out-of-range key index is one.
func IsAggregated(data []byte) bool {
	body, ok := verifiedBody(data)
	if !ok {
		return false
	}
	var d Deaggregator
	if !d.scan(body) {
		return false
	}
	_, ok, _ = d.expand(nil, body, false)
	return ok
}

// verifiedBody returns the protobuf between magic and digest if the framing and MD5 are right.
func verifiedBody(data []byte) ([]byte, bool) {
	if len(data) <= overhead || string(data[:len(Magic)]) != Magic {
		return nil, false
	}
	body := data[len(Magic) : len(data)-md5.Size]
	sum := md5.Sum(body)
	if !bytes.Equal(sum[:], data[len(data)-md5.Size:]) {
		return nil, false
	}
	return body, true
}

// scan checks the top-level fields of an AggregatedRecord and records where the key table entries
// and the records are: the tables may follow the records, so the records can only be expanded
// once the whole message has been seen. The records themselves are parsed by expand.
//
// Field numbers above 2^29-1 fit in ConsumeTag's int32 but are invalid wire format (protobuf-go
// rejects them; protobuf-java cannot even represent them), hence the IsValid checks here and in
// the nested messages.
func (d *Deaggregator) scan(body []byte) bool {
	d.pks, d.ehks, d.recs = d.pks[:0], d.ehks[:0], d.recs[:0]
	for i := 0; i < len(body); {
		num, typ, n := protowire.ConsumeTag(body[i:])
		if n < 0 || !num.IsValid() {
			return false
		}
		i += n
		tag := protowire.EncodeTag(num, typ)
		if tag != tagRecords && tag != tagPartitionKeyTable && tag != tagExplicitHashKeyTable {
			n = protowire.ConsumeFieldValue(num, typ, body[i:])
			if n < 0 {
				return false
			}
			i += n
			continue
		}
		v, n := protowire.ConsumeBytes(body[i:])
		if n < 0 {
			return false
		}
		s := span{i + n - len(v), i + n}
		switch tag {
		case tagRecords:
			d.recs = append(d.recs, s)
		case tagPartitionKeyTable:
			d.pks = append(d.pks, s)
		default:
			d.ehks = append(d.ehks, s)
		}
		i += n
	}
	return true
}

// expand parses the records found by scan and, if emit, appends the user records to dst. ok is
// false on a protobuf error in any record, which makes the whole input a pass-through even after
// an index error (the KCL parses the whole message before expanding it). After the first index
// error nothing more is appended but parsing goes on.
func (d *Deaggregator) expand(dst []UserRecord, body []byte, emit bool) (out []UserRecord, ok bool, err *IndexError) {
	for seq, rs := range d.recs {
		r, good := parseRecord(body[rs.start:rs.end])
		if !good {
			return dst, false, nil
		}
		if !emit || err != nil {
			continue
		}
		if err = d.check(seq, &r); err != nil {
			continue
		}
		ur := UserRecord{
			SubSequence:  seq,
			PartitionKey: d.key(body, d.pks[r.pkIndex]),
			Data:         body[rs.start+r.dataStart : rs.start+r.dataEnd : rs.start+r.dataEnd],
		}
		if r.hasEHK {
			ur.ExplicitHashKey = d.key(body, d.ehks[r.ehkIndex])
		}
		dst = append(dst, ur)
	}
	return dst, true, err
}

func (d *Deaggregator) key(body []byte, s span) []byte { return body[s.start:s.end:s.end] }

func (d *Deaggregator) check(seq int, r *record) *IndexError {
	if r.pkIndex >= uint64(len(d.pks)) {
		return &IndexError{Record: seq, Field: "partition_key_index", Index: r.pkIndex, TableLen: len(d.pks)}
	}
	if r.hasEHK && r.ehkIndex >= uint64(len(d.ehks)) {
		return &IndexError{Record: seq, Field: "explicit_hash_key_index", Index: r.ehkIndex, TableLen: len(d.ehks)}
	}
	return nil
}

// record is a parsed Record message; data is v[dataStart:dataEnd] of the message bytes v.
type record struct {
	pkIndex, ehkIndex  uint64
	hasEHK             bool
	dataStart, dataEnd int
}

// parseRecord parses a Record message. Repeated occurrences of a singular field keep the last
// one, as protobuf does.
func parseRecord(v []byte) (r record, ok bool) {
	hasPK, hasData := false, false
	for i := 0; i < len(v); {
		num, typ, n := protowire.ConsumeTag(v[i:])
		if n < 0 || !num.IsValid() {
			return r, false
		}
		i += n
		switch protowire.EncodeTag(num, typ) {
		case tagPartitionKeyIndex:
			r.pkIndex, n = protowire.ConsumeVarint(v[i:])
			hasPK = true
		case tagExplicitHashKeyIndex:
			r.ehkIndex, n = protowire.ConsumeVarint(v[i:])
			r.hasEHK = true
		case tagData:
			var b []byte
			b, n = protowire.ConsumeBytes(v[i:])
			r.dataStart, r.dataEnd = i+n-len(b), i+n
			hasData = true
		case tagTags:
			var b []byte
			b, n = protowire.ConsumeBytes(v[i:])
			if n >= 0 && !validTag(b) {
				return r, false
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, v[i:])
		}
		if n < 0 {
			return r, false
		}
		i += n
	}
	return r, hasPK && hasData
}

// validTag reports whether b parses as a Tag with its required key. Tags are not exposed (nor by
// the KPL and KCL), but a bad one makes protobuf-java reject the whole aggregate.
func validTag(b []byte) bool {
	hasKey := false
	for i := 0; i < len(b); {
		num, typ, n := protowire.ConsumeTag(b[i:])
		if n < 0 || !num.IsValid() {
			return false
		}
		i += n
		if protowire.EncodeTag(num, typ) == tagTagKey {
			hasKey = true
		}
		n = protowire.ConsumeFieldValue(num, typ, b[i:])
		if n < 0 {
			return false
		}
		i += n
	}
	return hasKey
}
