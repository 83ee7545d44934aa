package tracer

import (
	"maps"
	"slices"

	"github.com/cilium/ebpf"
)

// fakeTable is a BPF hash map in memory, for the aggregator without root.
// Entries come back in the order they were first put (the kernel's order is
// its hash's, so nothing may depend on it). afterRead, when set, runs once
// the whole table has been read and before the aggregator acts on what it
// read: the kernel writing in between.
type fakeTable[K comparable, V any] struct {
	keys      []K
	vals      map[K]V
	pos       int   // the next entry a batch lookup returns
	batchErr  error // what BatchLookup fails with (nil: it works)
	batches   int   // batch lookups made
	afterRead func()
}

func newFakeTable[K comparable, V any]() *fakeTable[K, V] {
	return &fakeTable[K, V]{vals: map[K]V{}}
}

func (f *fakeTable[K, V]) put(k K, v V) {
	if _, ok := f.vals[k]; !ok {
		f.keys = append(f.keys, k)
	}
	f.vals[k] = v
}

func (f *fakeTable[K, V]) has(k K) bool {
	_, ok := f.vals[k]
	return ok
}

// update changes an entry in place, as the kernel's atomic adds do.
func (f *fakeTable[K, V]) update(k K, fn func(*V)) {
	v := f.vals[k]
	fn(&v)
	f.put(k, v)
}

func (f *fakeTable[K, V]) key(key any) K {
	if p, ok := key.(*K); ok {
		return *p
	}
	return key.(K)
}

func (f *fakeTable[K, V]) Lookup(key, valueOut any) error {
	v, ok := f.vals[f.key(key)]
	if !ok {
		return ebpf.ErrKeyNotExist
	}
	*valueOut.(*V) = v
	return nil
}

func (f *fakeTable[K, V]) Delete(key any) error {
	k := f.key(key)
	if _, ok := f.vals[k]; !ok {
		return ebpf.ErrKeyNotExist
	}
	delete(f.vals, k)
	for i := range f.keys {
		if f.keys[i] == k {
			f.keys = append(f.keys[:i], f.keys[i+1:]...)
			break
		}
	}
	return nil
}

// BatchLookup follows the kernel's contract: up to len(keysOut) entries per
// call, ErrKeyNotExist with the last of them.
func (f *fakeTable[K, V]) BatchLookup(_ *ebpf.MapBatchCursor, keysOut, valuesOut any, _ *ebpf.BatchOptions) (int, error) {
	if f.batchErr != nil {
		return 0, f.batchErr
	}
	f.batches++
	ks, vs := keysOut.([]K), valuesOut.([]V)
	n := 0
	for ; n < len(ks) && f.pos < len(f.keys); n++ {
		ks[n], vs[n] = f.keys[f.pos], f.vals[f.keys[f.pos]]
		f.pos++
	}
	if f.pos < len(f.keys) {
		return n, nil
	}
	f.pos = 0
	if f.afterRead != nil {
		f.afterRead()
	}
	return n, ebpf.ErrKeyNotExist
}

func (f *fakeTable[K, V]) iterate(key, value any, fn func()) error {
	keys, vals := slices.Clone(f.keys), maps.Clone(f.vals)
	if f.afterRead != nil {
		f.afterRead()
	}
	for _, k := range keys {
		*key.(*K), *value.(*V) = k, vals[k]
		fn()
	}
	return nil
}
