package kpl

import "hash/maphash"

// keyIndex maps the keys of an aggregate's key table to their table index. It replaces a Go map
// on Add's hot path: one hash per key instead of a map lookup plus a map insert (two hashes and
// two probes), and a reset that only clears what was used.
//
// Open addressing with linear probing over a power-of-two table of slots; the keys themselves are
// kept in keys (the table index is their position), and compared only on a full 64-bit hash match.
type keyIndex struct {
	seed  maphash.Seed
	slots []keySlot
	keys  []string
	used  []int // occupied slot positions, for a cheap reset
}

type keySlot struct {
	hash uint64
	idx  uint32 // table index + 1; 0 = empty
}

func newKeyIndex() keyIndex {
	return keyIndex{seed: maphash.MakeSeed(), slots: make([]keySlot, 64)}
}

// find returns the table index of k, or the slot position where it would be inserted (with the
// hash to insert it with). Insert must follow before any other insert.
func (x *keyIndex) find(k string) (idx uint64, found bool, pos int, h uint64) {
	h = maphash.String(x.seed, k)
	mask := len(x.slots) - 1
	for pos = int(h) & mask; ; pos = (pos + 1) & mask {
		s := &x.slots[pos]
		if s.idx == 0 {
			return 0, false, pos, h
		}
		if s.hash == h && x.keys[s.idx-1] == k {
			return uint64(s.idx - 1), true, pos, h
		}
	}
}

// insert adds k (not present) at the position find returned and returns its table index.
func (x *keyIndex) insert(k string, pos int, h uint64) uint64 {
	x.keys = append(x.keys, k)
	x.slots[pos] = keySlot{hash: h, idx: uint32(len(x.keys))}
	x.used = append(x.used, pos)
	if 2*len(x.keys) > len(x.slots) { // keep the load at most 1/2: short probes
		x.grow()
	}
	return uint64(len(x.keys) - 1)
}

func (x *keyIndex) grow() {
	slots := make([]keySlot, 2*len(x.slots))
	mask := len(slots) - 1
	x.used = x.used[:0]
	for _, s := range x.slots {
		if s.idx == 0 {
			continue
		}
		pos := int(s.hash) & mask
		for slots[pos].idx != 0 {
			pos = (pos + 1) & mask
		}
		slots[pos] = s
		x.used = append(x.used, pos)
	}
	x.slots = slots
}

func (x *keyIndex) len() int { return len(x.keys) }

// reset empties the index, keeping its memory.
func (x *keyIndex) reset() {
	for _, pos := range x.used {
		x.slots[pos] = keySlot{}
	}
	x.used = x.used[:0]
	clear(x.keys) // drop the string references
	x.keys = x.keys[:0]
}
