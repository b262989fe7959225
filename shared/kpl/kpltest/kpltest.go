// Package kpltest loads the KPL test vectors (shared/kpl/testdata/vectors.json: aggregates
// written by the KPL and by other aggregators, with edge cases, each with the records it must
// de-aggregate to; see shared/kpl/testdata/PROVENANCE.md) for the tests of every package that reads KPL
// records.
//
// Tests only: it reads the file from the source tree.
package kpltest

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// Count is the number of vectors in the file: a test that loads fewer fails.
const Count = 31

// Record is one expected user record; keys are null for a record that is not an aggregate.
type Record struct {
	PartitionKey    *string `json:"partition_key"`
	ExplicitHashKey *string `json:"explicit_hash_key"`
	DataBase64      string  `json:"data_base64"`
}

// Vector is one Kinesis record's data and what de-aggregating it must give.
type Vector struct {
	Name              string  `json:"name"`
	AggregatedBase64  string  `json:"aggregated_base64"`
	OuterPartitionKey *string `json:"outer_partition_key"`
	Expect            struct {
		Aggregated bool `json:"aggregated"`
		Valid      bool `json:"valid"`
		// Records are the user records before the fault for an invalid aggregate.
		Records []Record `json:"records"`
	} `json:"expect"`
}

// Data returns the vector's Kinesis record data.
func (v Vector) Data(t testing.TB) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(v.AggregatedBase64)
	if err != nil {
		t.Fatalf("%s: %v", v.Name, err)
	}
	return b
}

// Path is the vectors file in the source tree.
func Path() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata", "vectors.json")
}

// Load reads every vector.
func Load(t testing.TB) []Vector {
	t.Helper()
	raw, err := os.ReadFile(Path())
	if err != nil {
		t.Fatal(err)
	}
	var vs []Vector
	if err := json.Unmarshal(raw, &vs); err != nil {
		t.Fatalf("%s: %v", Path(), err)
	}
	if len(vs) != Count {
		t.Fatalf("%s: %d vectors, want %d", Path(), len(vs), Count)
	}
	return vs
}
