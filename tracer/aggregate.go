package tracer

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// pruneAfter is how long a connection's aggregate may sit idle, fully
// printed, before its table entry is freed for other connections.
const pruneAfter = 30 * time.Second

// aggregator prints the periodic lines of aggregated events. The kernel
// counts into the `aggregates` table only what it did not send through the
// ring buffer; this side remembers how much of each entry it has printed and
// prints the growth, once per interval.
type aggregator struct {
	aggs     aggTable
	waits    aggTable
	dec      *decoder
	interval time.Duration
	printed  map[tcptraceAggKey]printedCount
	// attempts: syn_retransmit's per-destination counts by attempt number
	// (bpf/connect.bpf.c, syn_rtx_attempts; nil: not kept), and what
	// the lines so far printed of them.
	attempts        keyTable
	printedAttempts map[tcptraceAggKey]synAttempts
	// Batch buffers, and whether the kernel refused batch lookups (before
	// 5.6 for hash maps): then entries are read one by one.
	keys     []tcptraceAggKey
	vals     []tcptraceAggValue
	oneByOne bool
}

// keyTable is what the aggregator asks of a BPF map by key. *ebpf.Map has
// it; the unit tests give a fake, since making a kernel map needs privileges.
type keyTable interface {
	Lookup(key, valueOut any) error
	Delete(key any) error
}

// aggTable is a keyTable read whole: a kernelTable, or the tests' fake.
type aggTable interface {
	keyTable
	BatchLookup(cursor *ebpf.MapBatchCursor, keysOut, valuesOut any, opts *ebpf.BatchOptions) (int, error)
	// iterate fills key and value with each entry in turn and calls fn.
	iterate(key, value any, fn func()) error
}

// kernelTable is a kernel map as an aggTable.
type kernelTable struct{ *ebpf.Map }

func (m kernelTable) iterate(key, value any, fn func()) error {
	it := m.Iterate()
	for it.Next(key, value) {
		fn()
	}
	return it.Err()
}

// aggBatch is how many entries one batch lookup reads: 16 system calls for a
// full table, where reading entry by entry takes two per entry (32k a
// second at 16k connections, measured at a quarter of tcptrace's CPU time
// under a storm of new destinations).
const aggBatch = 1024

// synAttempts mirrors struct syn_attempts: slot i counts attempt i+1, the
// last slot that attempt and later ones.
type synAttempts [32]uint64

// attemptRange is the range of attempt numbers whose counts grew from
// printed to now (0, 0: none did). A slot that shrank was recycled by the
// kernel's LRU: its whole count is new.
func attemptRange(printed, now *synAttempts, latest uint32) (lo, hi uint32) {
	for i := range now {
		if now[i] == printed[i] {
			continue
		}
		if lo == 0 {
			lo = uint32(i + 1)
		}
		hi = uint32(i + 1)
	}
	if hi == uint32(len(now)) && latest > hi {
		hi = latest // the last slot holds every later attempt too
	}
	return lo, hi
}

type printedCount struct {
	count, waitNs uint64
}

func newAggregator(aggs, waits *ebpf.Map, dec *decoder, interval time.Duration) *aggregator {
	return &aggregator{aggs: kernelTable{aggs}, waits: kernelTable{waits}, dec: dec, interval: interval, printed: map[tcptraceAggKey]printedCount{}}
}

func monotonicNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// flush prints every entry that grew since the last flush, and every send
// still blocked for longer than an interval. final is the last call, after
// the programs are detached: nothing is pruned then.
func (a *aggregator) flush(emit func(Event), final bool) error {
	now := monotonicNow()
	var stale []tcptraceAggKey
	// SYN retransmits last: the listener and PAWS lines of this flush tell
	// a local client's line what happened to its SYNs (connect_cause.go).
	type entry struct {
		key tcptraceAggKey
		val tcptraceAggValue
	}
	var later []entry
	printOne := func(key *tcptraceAggKey, val *tcptraceAggValue) {
		p := a.printed[*key]
		if val.Count > p.count {
			t := tally{
				count:   val.Count - p.count,
				wait:    time.Duration(val.WaitNs - p.waitNs),
				maxWait: time.Duration(val.MaxWaitNs),
			}
			if EventType(key.Type) == SynRetransmit {
				t.attemptLo, t.attemptHi = a.synAttempts(key, &val.Ev)
			}
			e := a.dec.decode(&val.Ev, t)
			e.Time = a.dec.wall(val.LastNs)
			emit(e)
			a.printed[*key] = printedCount{count: val.Count, waitNs: val.WaitNs}
			return
		}
		// Idle since the latest occurrence, or since the entry was
		// made: agg_commit() makes it with its first occurrence (sent
		// through the ring buffer) and no last_ns.
		if !final && time.Duration(now-max(val.LastNs, val.SnapNs)) > pruneAfter {
			stale = append(stale, *key)
		}
	}
	err := a.each(func(key *tcptraceAggKey, val *tcptraceAggValue) {
		if EventType(key.Type) == SynRetransmit {
			later = append(later, entry{*key, *val})
			return
		}
		printOne(key, val)
	})
	for i := range later {
		printOne(&later[i].key, &later[i].val)
	}
	if err != nil {
		return fmt.Errorf("reading the aggregation table: %w", err)
	}
	for _, k := range stale {
		if err := a.aggs.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("pruning the aggregation table: %w", err)
		}
		delete(a.printed, k)
		if EventType(k.Type) == SynRetransmit && a.attempts != nil {
			if err := a.attempts.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("pruning the SYN attempt table: %w", err)
			}
			delete(a.printedAttempts, k)
		}
	}
	return a.flushWaits(emit, now)
}

// synAttempts is the range of attempt numbers of the SYN retransmits a
// syn_retransmit line counts: those the destination's slots gained since its
// last line. Without the table (or a lost update) the latest attempt alone.
func (a *aggregator) synAttempts(key *tcptraceAggKey, ev *tcptraceEvent) (lo, hi uint32) {
	latest := ev.C.SynRtx
	if ev.C.StartKnown == 0 {
		latest = uint32(ev.C.Retransmits)
	}
	var now synAttempts
	if a.attempts == nil || a.attempts.Lookup(key, &now) != nil {
		return latest, latest
	}
	if a.printedAttempts == nil {
		a.printedAttempts = map[tcptraceAggKey]synAttempts{}
	}
	printed := a.printedAttempts[*key]
	for i := range printed {
		if now[i] < printed[i] {
			printed[i] = 0
		}
	}
	a.printedAttempts[*key] = now
	if lo, hi = attemptRange(&printed, &now, latest); lo == 0 {
		return latest, latest
	}
	return lo, hi
}

// each calls fn for every entry of the aggregation table, in batches where
// the kernel can.
func (a *aggregator) each(fn func(*tcptraceAggKey, *tcptraceAggValue)) error {
	if !a.oneByOne {
		if a.keys == nil {
			a.keys, a.vals = make([]tcptraceAggKey, aggBatch), make([]tcptraceAggValue, aggBatch)
		}
		var cursor ebpf.MapBatchCursor
		for first := true; ; first = false {
			n, err := a.aggs.BatchLookup(&cursor, a.keys, a.vals, nil)
			for i := 0; i < n; i++ {
				fn(&a.keys[i], &a.vals[i])
			}
			switch {
			case errors.Is(err, ebpf.ErrKeyNotExist):
				return nil
			case first && n == 0 && (errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.EINVAL)):
				a.oneByOne = true
			case err != nil:
				return err
			default:
				continue
			}
			break
		}
	}
	var (
		key tcptraceAggKey
		val tcptraceAggValue
	)
	return a.aggs.iterate(&key, &val, func() { fn(&key, &val) })
}

// flushWaits reports sends that are blocked right now, longer than an
// interval: the line an SRE needs while a sender is stuck on a dead path.
func (a *aggregator) flushWaits(emit func(Event), now uint64) error {
	var (
		tid uint64
		ev  tcptraceEvent
	)
	err := a.waits.iterate(&tid, &ev, func() {
		if now < ev.TsNs || time.Duration(now-ev.TsNs) < a.interval {
			return
		}
		waited := time.Duration(now - ev.TsNs)
		e := a.dec.decode(&ev, tally{count: 1, wait: waited, maxWait: waited, inProgress: true})
		e.Time = a.dec.wall(now)
		emit(e)
	})
	if err != nil {
		return fmt.Errorf("reading blocked senders: %w", err)
	}
	return nil
}
