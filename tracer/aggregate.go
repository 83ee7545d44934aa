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
	aggs     *ebpf.Map
	waits    *ebpf.Map
	dec      *decoder
	interval time.Duration
	printed  map[tcptraceAggKey]printedCount
}

type printedCount struct {
	count, waitNs uint64
}

func newAggregator(aggs, waits *ebpf.Map, dec *decoder, interval time.Duration) *aggregator {
	return &aggregator{aggs: aggs, waits: waits, dec: dec, interval: interval, printed: map[tcptraceAggKey]printedCount{}}
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
	var (
		key   tcptraceAggKey
		val   tcptraceAggValue
		stale []tcptraceAggKey
	)
	it := a.aggs.Iterate()
	for it.Next(&key, &val) {
		p := a.printed[key]
		if val.Count > p.count {
			e := a.dec.decode(&val.Ev, tally{
				count:   val.Count - p.count,
				wait:    time.Duration(val.WaitNs - p.waitNs),
				maxWait: time.Duration(val.MaxWaitNs),
			})
			e.Time = a.dec.wall(val.LastNs)
			emit(e)
			a.printed[key] = printedCount{count: val.Count, waitNs: val.WaitNs}
			continue
		}
		if !final && time.Duration(now-val.LastNs) > pruneAfter {
			stale = append(stale, key)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading the aggregation table: %w", err)
	}
	for _, k := range stale {
		if err := a.aggs.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("pruning the aggregation table: %w", err)
		}
		delete(a.printed, k)
	}
	return a.flushWaits(emit, now)
}

// flushWaits reports sends that are blocked right now, longer than an
// interval: the line an SRE needs while a sender is stuck on a dead path.
func (a *aggregator) flushWaits(emit func(Event), now uint64) error {
	var (
		tid uint64
		ev  tcptraceEvent
	)
	it := a.waits.Iterate()
	for it.Next(&tid, &ev) {
		if now < ev.TsNs || time.Duration(now-ev.TsNs) < a.interval {
			continue
		}
		waited := time.Duration(now - ev.TsNs)
		e := a.dec.decode(&ev, tally{count: 1, wait: waited, maxWait: waited, inProgress: true})
		e.Time = a.dec.wall(now)
		emit(e)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading blocked senders: %w", err)
	}
	return nil
}
