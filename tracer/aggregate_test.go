package tracer

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

type aggFakes struct {
	a        *aggregator
	aggs     *fakeTable[tcptraceAggKey, tcptraceAggValue]
	waits    *fakeTable[uint64, tcptraceEvent]
	attempts *fakeTable[tcptraceAggKey, synAttempts]
}

// aggBoot is the wall-clock time of monotonic zero in these tests.
var aggBoot = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newFakeAggregator() *aggFakes {
	f := &aggFakes{
		aggs:     newFakeTable[tcptraceAggKey, tcptraceAggValue](),
		waits:    newFakeTable[uint64, tcptraceEvent](),
		attempts: newFakeTable[tcptraceAggKey, synAttempts](),
	}
	dec := &decoder{hz: 250, bootWall: aggBoot}
	f.a = &aggregator{aggs: f.aggs, waits: f.waits, attempts: f.attempts, dec: dec, interval: time.Second, printed: map[tcptraceAggKey]printedCount{}}
	return f
}

// flush runs one flush and returns its lines as the JSON contract has them.
func (f *aggFakes) flush(t *testing.T, final bool) []map[string]any {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter("json", &buf)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.a.flush(func(e Event) {
		if err := w.Write(e); err != nil {
			t.Fatal(err)
		}
	}, final); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for d := json.NewDecoder(&buf); d.More(); {
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// One connection's entry, as agg_commit() makes it: the first occurrence
// went through the ring buffer, so the table's count (and last_ns) start
// at 0.
func sendKey(sk uint64) (tcptraceAggKey, tcptraceAggValue) {
	k := tcptraceAggKey{Sk: sk, Type: uint32(SendEAGAIN)}
	var v tcptraceAggValue
	v.Ev.Type = uint8(SendEAGAIN)
	v.Ev.S.Sk, v.Ev.S.Family = sk, 2
	return k, v
}

// One destination's syn_retransmit entry (key_dest()), the latest
// connection's snapshot at its attempt syn_rtx.
func synKey(dest byte, synRtx uint32) (tcptraceAggKey, tcptraceAggValue) {
	k := tcptraceAggKey{Type: uint32(SynRetransmit)}
	k.Addr[0], k.Addr[3] = 10, dest
	var v tcptraceAggValue
	v.Ev.Type = uint8(SynRetransmit)
	v.Ev.C.Family, v.Ev.C.StartKnown, v.Ev.C.SynRtx = 2, 1, synRtx
	return k, v
}

// hit counts n occurrences into an entry, as agg_add() does.
func (f *aggFakes) hit(k tcptraceAggKey, n uint64) {
	f.aggs.update(k, func(v *tcptraceAggValue) { v.Count += n; v.LastNs = monotonicNow() })
}

// A send blocked since ts (wait_starts' value).
func blockedSince(ts uint64) (ev tcptraceEvent) {
	ev.Type, ev.S.Family, ev.TsNs = uint8(SendBlocked), 2, ts
	return ev
}

func lineCounts(lines []map[string]any) []float64 {
	var c []float64
	for _, l := range lines {
		c = append(c, l["count"].(float64))
	}
	return c
}

// The first occurrence on a key went out through the ring buffer and is not
// in the table's count: a new entry prints nothing.
func TestAggregatorNewEntryPrintsNothing(t *testing.T) {
	f := newFakeAggregator()
	k, v := sendKey(0xa1)
	f.aggs.put(k, v)
	k, v = synKey(2, 1)
	f.aggs.put(k, v)
	if lines := f.flush(t, false); len(lines) != 0 {
		t.Fatalf("new entries (their first occurrence already sent) printed %v", lines)
	}
}

// Later occurrences make one line per interval with the occurrences of that
// interval, timed at the latest; an interval without any prints nothing.
func TestAggregatorPrintsGrowthOncePerInterval(t *testing.T) {
	f := newFakeAggregator()
	k, v := sendKey(0xa1)
	f.aggs.put(k, v)
	f.hit(k, 3)
	last := f.aggs.vals[k].LastNs
	lines := f.flush(t, false)
	if len(lines) != 1 || lines[0]["count"] != 3.0 || lines[0]["event"] != "send_eagain" {
		t.Fatalf("3 occurrences: %v", lines)
	}
	if want := aggBoot.Add(time.Duration(last)).Format(time.RFC3339Nano); lines[0]["time"] != want {
		t.Errorf("time %v, want the latest occurrence's, %s", lines[0]["time"], want)
	}
	if lines := f.flush(t, false); len(lines) != 0 {
		t.Fatalf("nothing new, yet printed %v", lines)
	}
	f.hit(k, 2)
	if c := lineCounts(f.flush(t, false)); len(c) != 1 || c[0] != 2 {
		t.Fatalf("2 more: counts %v, want [2]", c)
	}
}

// The kernel counts into an entry while user space reads and prints the
// table: what it adds after the read is printed by the next flush, never
// lost (the table is only ever added to, the aggregator prints growth).
func TestAggregatorKeepsCountsAddedDuringAFlush(t *testing.T) {
	f := newFakeAggregator()
	k, v := sendKey(0xa2)
	f.aggs.put(k, v)
	f.hit(k, 3)
	f.aggs.afterRead = func() {
		f.hit(k, 4)
		f.aggs.afterRead = nil
	}
	if c := lineCounts(f.flush(t, false)); len(c) != 1 || c[0] != 3 {
		t.Fatalf("counts %v, want [3] (what was read)", c)
	}
	if c := lineCounts(f.flush(t, false)); len(c) != 1 || c[0] != 4 {
		t.Fatalf("counts %v, want [4] (added during the last flush)", c)
	}
}

// syn_retransmit lines come last in a flush, whatever the table's order:
// the listener and PAWS lines before them are what the SYNs' cause is
// looked up in.
func TestAggregatorSynRetransmitLast(t *testing.T) {
	f := newFakeAggregator()
	var keys []tcptraceAggKey
	k, v := synKey(2, 2)
	f.aggs.put(k, v)
	keys = append(keys, k)
	for i := uint64(1); i <= 3; i++ {
		k, v := sendKey(i)
		f.aggs.put(k, v)
		keys = append(keys, k)
	}
	k, v = synKey(3, 2)
	f.aggs.put(k, v)
	keys = append(keys, k)
	for _, k := range keys {
		f.hit(k, 1)
	}
	lines := f.flush(t, false)
	var order []string
	for _, l := range lines {
		order = append(order, l["event"].(string))
	}
	want := "send_eagain send_eagain send_eagain syn_retransmit syn_retransmit"
	if got := strings.Join(order, " "); got != want {
		t.Errorf("order %s, want %s", got, want)
	}
}

// A destination's line gives the range of attempt numbers that grew in its
// attempts table since its last line; without the table, the latest
// connection's attempt.
func TestAggregatorSynAttemptRange(t *testing.T) {
	f := newFakeAggregator()
	k, v := synKey(2, 3)
	f.aggs.put(k, v)
	rng := func(l map[string]any) [3]float64 {
		d := l["details"].(map[string]any)
		lo, _ := d["attempt_min"].(float64)
		hi, _ := d["attempt_max"].(float64)
		return [3]float64{l["count"].(float64), lo, hi}
	}
	check := func(what string, want [3]float64) {
		t.Helper()
		lines := f.flush(t, false)
		if len(lines) != 1 {
			t.Fatalf("%s: %d lines, want 1", what, len(lines))
		}
		if got := rng(lines[0]); got != want {
			t.Errorf("%s: count, attempt_min, attempt_max %v, want %v", what, got, want)
		}
	}
	// Retransmit 2 of three connections, retransmit 3 of one.
	f.hit(k, 4)
	f.attempts.put(k, synAttempts{1: 3, 2: 1})
	check("attempts 2 and 3", [3]float64{4, 2, 3})
	// Only what grew since that line.
	f.hit(k, 2)
	f.aggs.update(k, func(v *tcptraceAggValue) { v.Ev.C.SynRtx = 4 })
	f.attempts.update(k, func(a *synAttempts) { a[3] += 2 })
	check("attempt 4", [3]float64{2, 4, 4})
	// The LRU recycled the destination's attempts entry: slots that fell
	// to zero counted nothing new.
	f.hit(k, 1)
	f.aggs.update(k, func(v *tcptraceAggValue) { v.Ev.C.SynRtx = 5 })
	f.attempts.put(k, synAttempts{4: 1})
	check("recycled, attempt 5", [3]float64{1, 5, 5})
	// Gone from the LRU: the latest connection's attempt alone (its
	// retransmit count when its connect() start was not seen).
	if err := f.attempts.Delete(k); err != nil {
		t.Fatal(err)
	}
	f.hit(k, 1)
	f.aggs.update(k, func(v *tcptraceAggValue) { v.Ev.C.SynRtx = 6 })
	check("no attempts entry", [3]float64{1, 6, 6})
	f.hit(k, 1)
	f.aggs.update(k, func(v *tcptraceAggValue) { v.Ev.C.StartKnown = 0; v.Ev.C.Retransmits = 7 })
	check("no attempts entry, start unseen", [3]float64{1, 7, 7})
	f.a.attempts = nil
	f.hit(k, 1)
	check("no attempts table", [3]float64{1, 7, 7})
}

// An entry idle for pruneAfter, fully printed, is freed (with its attempts
// entry); printed state goes with it, so that the entry the kernel makes
// next for the key counts from zero again. Grown or recent entries stay.
// A new entry, as agg_commit() makes it: its first occurrence went through
// the ring buffer, count 0, last_ns never set (only a later occurrence sets
// it), snap_ns now. It is not idle: pruning it at the next flush would send
// the key's next occurrence as a line of its own, and lose one counted into
// the entry between the read and the delete.
func TestAggregatorKeepsNewEntries(t *testing.T) {
	now := monotonicNow()
	f := newFakeAggregator()
	k, v := sendKey(1)
	v.SnapNs = now
	f.aggs.put(k, v)
	if lines := f.flush(t, false); len(lines) != 0 {
		t.Fatalf("a new entry printed %v", lines)
	}
	if !f.aggs.has(k) {
		t.Fatal("a new entry (count 0, no occurrence since) was pruned at the first flush")
	}
}

func TestAggregatorPrunesIdleEntries(t *testing.T) {
	now := monotonicNow()
	if now < uint64(2*pruneAfter) {
		t.Skip("the monotonic clock is too young to date an entry before pruneAfter")
	}
	old := now - uint64(pruneAfter+time.Second)
	f := newFakeAggregator()
	idle, iv := sendKey(1)
	iv.Count = 5
	f.aggs.put(idle, iv)
	recent, rv := sendKey(2)
	rv.Count = 1
	f.aggs.put(recent, rv)
	syn, sv := synKey(2, 2)
	sv.Count = 2
	f.aggs.put(syn, sv)
	f.attempts.put(syn, synAttempts{1: 2})
	if c := lineCounts(f.flush(t, false)); len(c) != 3 {
		t.Fatalf("counts %v, want 3 lines", c)
	}
	f.aggs.update(idle, func(v *tcptraceAggValue) { v.LastNs = old })
	f.aggs.update(syn, func(v *tcptraceAggValue) { v.LastNs = old })
	f.aggs.update(recent, func(v *tcptraceAggValue) { v.LastNs = now })
	// The final flush prunes nothing.
	if lines := f.flush(t, true); len(lines) != 0 || !f.aggs.has(idle) || !f.aggs.has(syn) {
		t.Fatalf("final flush: %v lines, idle entry kept %v", lines, f.aggs.has(idle))
	}
	if lines := f.flush(t, false); len(lines) != 0 {
		t.Fatalf("nothing grew, yet %v", lines)
	}
	if f.aggs.has(idle) || f.aggs.has(syn) || f.attempts.has(syn) {
		t.Fatalf("idle entries kept: send %v, syn %v, attempts %v", f.aggs.has(idle), f.aggs.has(syn), f.attempts.has(syn))
	}
	if !f.aggs.has(recent) {
		t.Fatal("a recent entry was pruned")
	}
	// The kernel makes the key's entry again (its first occurrence sent at
	// once), then counts 2 into it.
	_, iv = sendKey(1)
	f.aggs.put(idle, iv)
	f.aggs.update(idle, func(v *tcptraceAggValue) { v.Count, v.LastNs = 2, now })
	if c := lineCounts(f.flush(t, false)); len(c) != 1 || c[0] != 2 {
		t.Fatalf("the key's new entry: counts %v, want [2]", c)
	}
	// An idle entry that grew is printed, not pruned.
	f.aggs.update(idle, func(v *tcptraceAggValue) { v.Count++; v.LastNs = old })
	if c := lineCounts(f.flush(t, false)); len(c) != 1 || c[0] != 1 || !f.aggs.has(idle) {
		t.Fatalf("grown idle entry: counts %v, kept %v", c, f.aggs.has(idle))
	}
}

// At exit (programs detached) the last flush prints what was counted since
// the last interval and the sends still blocked: the lines of a run add up
// to what the kernel counted.
func TestAggregatorFinalFlushPrintsTheRest(t *testing.T) {
	f := newFakeAggregator()
	k, v := sendKey(1)
	f.aggs.put(k, v)
	total := 1.0 // the first occurrence, through the ring buffer
	for _, add := range []uint64{3, 0, 6} {
		f.hit(k, add)
		for _, c := range lineCounts(f.flush(t, false)) {
			total += c
		}
	}
	f.hit(k, 5)
	f.waits.put(7, blockedSince(monotonicNow()-uint64(3*time.Second)))
	lines := f.flush(t, true)
	if len(lines) != 2 || lines[0]["event"] != "send_eagain" || lines[1]["event"] != "send_blocked" {
		t.Fatalf("final flush: %v", lines)
	}
	total += lines[0]["count"].(float64)
	if total != 15 {
		t.Errorf("lines add up to %v occurrences, the kernel counted 15", total)
	}
	if d := lines[1]["details"].(map[string]any); d["in_progress"] != true {
		t.Errorf("blocked send: %v", d)
	}
}

// A send blocked for longer than an interval is printed every interval,
// still in progress; a shorter wait is not.
func TestAggregatorBlockedSends(t *testing.T) {
	f := newFakeAggregator()
	now := monotonicNow()
	f.waits.put(1, blockedSince(now-uint64(3*time.Second)))
	f.waits.put(2, blockedSince(now-uint64(f.a.interval/2)))
	f.waits.put(3, blockedSince(now+uint64(time.Second))) // began after the flush read the clock
	lines := f.flush(t, false)
	if len(lines) != 1 {
		t.Fatalf("%d lines, want 1 (the wait longer than an interval): %v", len(lines), lines)
	}
	d := lines[0]["details"].(map[string]any)
	if lines[0]["count"] != 1.0 || d["in_progress"] != true || d["wait_ms"].(float64) < 3000 {
		t.Errorf("line %v", lines[0])
	}
}

// More entries than one batch reads are all printed; a kernel that refuses
// batch lookups (hash maps before 5.6) is read entry by entry, and asked
// no more.
func TestAggregatorReadsWholeTable(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		f := newFakeAggregator()
		if refuse {
			f.aggs.batchErr = ebpf.ErrNotSupported
		}
		const n = 2*aggBatch + 100
		for i := uint64(1); i <= n; i++ {
			k, v := sendKey(i)
			v.Count, v.LastNs = i, monotonicNow()
			f.aggs.put(k, v)
		}
		for round := 0; round < 2; round++ {
			lines, want := f.flush(t, false), n*(1-round)
			if len(lines) != want {
				t.Fatalf("refused %v, round %d: %d lines, want %d", refuse, round, len(lines), want)
			}
			for i, l := range lines {
				if l["count"] != float64(i+1) {
					t.Fatalf("refused %v: line %d count %v", refuse, i, l["count"])
				}
			}
		}
		if !refuse && f.aggs.batches != 2*3 {
			t.Errorf("%d batch lookups, want 3 a flush", f.aggs.batches)
		}
		if refuse && !f.a.oneByOne {
			t.Error("batch lookups still tried")
		}
	}
}

// A batch lookup that fails otherwise is an error, not a silent stop.
func TestAggregatorBatchError(t *testing.T) {
	f := newFakeAggregator()
	k, v := sendKey(1)
	f.aggs.put(k, v)
	f.aggs.batchErr = errors.New("EFAULT")
	if err := f.a.flush(func(Event) {}, false); err == nil || !strings.Contains(err.Error(), "EFAULT") {
		t.Errorf("err %v", err)
	}
}
