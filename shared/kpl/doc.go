// Package kpl writes and reads the KPL aggregated record format: many user records packed into
// one Kinesis record, as the Kinesis Producer Library (KPL) writes them and the Kinesis Client
// Library (KCL) and the Lambda de-aggregators read them.
//
// # Format
//
// The data of an aggregated Kinesis record is
//
//	F3 89 9A C2 | protobuf AggregatedRecord | MD5 of the protobuf bytes (16 bytes)
//
// with the proto2 schema
//
//	message AggregatedRecord {
//	  repeated string partition_key_table     = 1;
//	  repeated string explicit_hash_key_table = 2;
//	  repeated Record records                 = 3;
//	}
//	message Record {
//	  required uint64 partition_key_index     = 1;
//	  optional uint64 explicit_hash_key_index = 2;
//	  required bytes  data                    = 3;
//	  repeated Tag    tags                    = 4;
//	}
//	message Tag { required string key = 1; optional string value = 2; }
//
// Both directions are hand-written on top of google.golang.org/protobuf/encoding/protowire (no
// reflection, no generated code): the aggregator appends each record's bytes as it is added and
// knows the exact size of the output at all times; the de-aggregator never copies user data.
//
// # Aggregator
//
// [Aggregator] packs user records until the next one would push the emitted Kinesis record over
// [AggregatorConfig.MaxSize] (data + outer partition key, the quantity Kinesis limits) or
// [AggregatorConfig.MaxRecords]; Add then returns [ErrFull] and the caller flushes. Key tables are
// de-duplicated and written before the records, in the KPL's field order.
//
// # De-aggregation rules
//
// The rules are those of the KCL (AggregatorUtil.deaggregate, without its shard hash-range
// filtering), the reference the test vectors in testdata/vectors.json were checked against:
//
//  1. data is an aggregate iff it starts with [Magic], is longer than 20 bytes, its last 16 bytes
//     are the MD5 of the bytes between magic and digest, and those bytes parse as a proto2
//     AggregatedRecord: every Record (and every Tag) has its required fields, unknown fields are
//     skipped, a known field number with an unexpected wire type is an unknown field (as in
//     protobuf-java and protobuf-go).
//  2. Anything else passes through unchanged as one record: the caller keeps the Kinesis record's
//     own partition key for it.
//  3. User records come out in the order of the records field; key tables may come before or after
//     it and may hold unused or duplicate entries; an explicit hash key is reported only when the
//     Record has explicit_hash_key_index (presence, not value 0).
//  4. A key index out of range stops the expansion: the records before it are returned with an
//     *[IndexError], the rest are dropped and the original record is not passed through.
//  5. An aggregate with zero records yields zero user records.
//
// # Aliasing
//
// [UserRecord] fields point into the input: nothing is copied, so the input must stay unchanged
// while the records are in use. Their capacity is clipped to their length, so appending to one
// never overwrites the input. [Aggregator.Add] copies data and keeps the key strings until the
// next Flush or Reset; [Aggregator.Flush] writes into the caller's buffer (see there).
//
// # Deliberate divergences from other implementations
//
//   - awslabs/kinesis-aggregation (Go): we report explicit hash keys, pass through (instead of
//     failing the whole batch) an aggregate whose protobuf does not parse, and return an
//     [IndexError] instead of panicking on an out-of-range index.
//   - KCL: an index is out of range when it is >= the table length as a uint64; the KCL casts it
//     to a Java int first, so an index such as 2^32 would alias entry 0 there.
//   - node aws-kinesis-agg / aws-lambda-fanout: magic + MD5(empty) (20 bytes) passes through
//     here (KCL rule 1) instead of yielding zero records; an MD5 mismatch passes through instead
//     of being an error.
//   - python aws_kinesis_agg: a Record without explicit_hash_key_index has no explicit hash key
//     here, even when the table is non-empty.
//   - The wire format is checked as protobuf-go checks it: a varint of more than 10 bytes, or
//     with a 10th byte above 1, and a field number above 2^29-1 are parse errors (protobuf-java
//     silently drops the excess bits of such varints and tags).
//   - The aggregator validates keys as Kinesis would (partition key 1-256 characters of valid
//     UTF-8, counted as UTF-16 code units, the stricter reading; explicit hash key a decimal in
//     [0, 2^128-1] without leading zeros) so that a bad key fails at Add, not at PutRecords.
package kpl
