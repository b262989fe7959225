package kpl

import (
	"errors"
	"strconv"
)

var (
	// ErrFull means the record does not fit in the current aggregate: Flush, then Add it again.
	ErrFull = errors.New("kpl: aggregate full")
	// ErrTooLarge means the record would not fit within MaxSize even alone: it can never be sent
	// with this configuration.
	ErrTooLarge = errors.New("kpl: record too large")
	// ErrInvalidPartitionKey means a partition key Kinesis would reject: empty, longer than
	// MaxPartitionKeyLen characters, or not valid UTF-8.
	ErrInvalidPartitionKey = errors.New("kpl: invalid partition key")
	// ErrInvalidExplicitHashKey means an explicit hash key Kinesis would reject: not a decimal
	// integer in [0, 2^128-1] written without leading zeros.
	ErrInvalidExplicitHashKey = errors.New("kpl: invalid explicit hash key")
)

// IndexError reports a user record whose key index points outside its key table (rule 4): the
// aggregate is recognised but cannot be fully expanded.
type IndexError struct {
	Record   int    // index of the faulty record within the aggregate (its would-be SubSequence)
	Field    string // "partition_key_index" or "explicit_hash_key_index"
	Index    uint64 // the index found in the record
	TableLen int    // entries in the table it indexes
}

func (e *IndexError) Error() string {
	return "kpl: record " + strconv.Itoa(e.Record) + ": " + e.Field + " " +
		strconv.FormatUint(e.Index, 10) + " out of range (table has " + strconv.Itoa(e.TableLen) + " entries)"
}
