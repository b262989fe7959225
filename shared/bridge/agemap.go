package bridge

import "time"

// ageMap remembers keys for at least keep after they were last put, within a memory budget (b.mu
// guards it). It is how the bridge remembers each key's newest timestamp (the late-redelivery
// fence) and the messages it wrote.
//
// Entries live in generations: the newest takes every put, and a new one starts every keep/4 (or
// once it has held a quarter of the budget). A put of a key found in an older generation moves it
// to the newest. A generation whose last put is keep ago is dropped whole, so forgetting costs a
// few operations per housekeeping tick however many keys expire (no pause that grows with the
// number of keys), and a key is forgotten between keep and 1.25 x keep after its last put.
//
// The budget counts slots, not entries: a Go map keeps the memory of its largest size until it is
// dropped, so a generation costs what it once held. When the slots exceed the budget the oldest
// generation is dropped at once: its remaining keys are forgotten early, and counted.
type ageMap[K comparable, V any] struct {
	keep   time.Duration
	span   time.Duration // a generation takes puts this long
	budget int           // slots; 0 = unbounded
	gens   []generation[K, V]
	n      int // entries
	slots  int // sum of the generations' peak sizes
	// evicted is called with the number of entries forgotten before keep because of the budget.
	evicted func(n int)
}

type generation[K comparable, V any] struct {
	m     map[K]V
	start time.Time // first put
	end   time.Time // last put
	peak  int       // largest len(m)
}

func newAgeMap[K comparable, V any](keep time.Duration, budget int, evicted func(int)) *ageMap[K, V] {
	if evicted == nil {
		evicted = func(int) {}
	}
	return &ageMap[K, V]{keep: keep, span: max(keep/4, time.Millisecond), budget: budget, evicted: evicted}
}

// get returns the value of k and the generation holding it (-1: absent).
func (a *ageMap[K, V]) get(k K) (v V, gen int) {
	for i := len(a.gens) - 1; i >= 0; i-- {
		if v, ok := a.gens[i].m[k]; ok {
			return v, i
		}
	}
	return v, -1
}

// put stores v for k at time now; gen is where get found k (-1: absent).
func (a *ageMap[K, V]) put(k K, v V, gen int, now time.Time) {
	cur := len(a.gens) - 1
	if cur < 0 || now.Sub(a.gens[cur].start) >= a.span || (a.budget > 0 && a.gens[cur].peak >= max(a.budget/4, 1)) {
		a.gens = append(a.gens, generation[K, V]{m: map[K]V{}, start: now})
		cur++
	}
	g := &a.gens[cur]
	g.end = now
	if gen == cur {
		g.m[k] = v
		return
	}
	if gen >= 0 {
		delete(a.gens[gen].m, k)
		a.n--
	}
	g.m[k] = v
	a.n++
	if len(g.m) > g.peak {
		g.peak++
		a.slots++
	}
	for a.budget > 0 && a.slots > a.budget && len(a.gens) > 1 {
		if n := len(a.gens[0].m); n > 0 {
			a.evicted(n)
		}
		a.drop()
	}
}

// expire forgets the generations whose last put is keep before now.
func (a *ageMap[K, V]) expire(now time.Time) {
	for len(a.gens) > 0 && now.Sub(a.gens[0].end) >= a.keep {
		a.drop()
	}
}

func (a *ageMap[K, V]) drop() {
	a.n -= len(a.gens[0].m)
	a.slots -= a.gens[0].peak
	a.gens[0] = generation[K, V]{}
	a.gens = a.gens[1:]
}

// len returns the number of entries remembered.
func (a *ageMap[K, V]) len() int { return a.n }

// bytesPerSlot is the heap a Go map of 8-byte keys and 4- or 8-byte values takes per entry just
// after it has grown (Go 1.26 swiss tables: 37.8 bytes; 23-30 between growths), measured by
// BenchmarkAgeMapMemory. Budgets given in bytes are divided by it.
const bytesPerSlot = 38

// budgetSlots converts a budget in MiB into slots (0: unbounded).
func budgetSlots(mib int) int { return mib << 20 / bytesPerSlot }
