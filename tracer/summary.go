package tracer

import (
	"fmt"
	"io"
	"net/netip"
	"sort"
)

// Summary accumulates what a run printed, for the report at exit.
type Summary struct {
	byReason map[summaryKey]uint64
	byConn   map[connKey]uint64
}

type summaryKey struct {
	event  EventType
	reason Reason
}

type connKey struct {
	event         EventType
	pid           uint32
	comm          string
	local, remote netip.AddrPort
}

func NewSummary() *Summary {
	return &Summary{byReason: map[summaryKey]uint64{}, byConn: map[connKey]uint64{}}
}

// Add counts one printed line. A send still blocked is not a finished wait
// and is left out, so the totals count each wait once.
func (s *Summary) Add(e Event) {
	if e.inProgress {
		return
	}
	s.byReason[summaryKey{e.Type, e.Reason}] += e.Count
	s.byConn[connKey{e.Type, e.PID, e.Comm, e.Local, e.Remote}] += e.Count
}

// total is the sum of counts of one event.
func (s *Summary) total(t EventType) uint64 {
	var n uint64
	for k, v := range s.byReason {
		if k.event == t {
			n += v
		}
	}
	return n
}

// Write prints the report: counts per event and reason, per connection
// (largest first, at most 20), and the records the kernel could not deliver.
func (s *Summary) Write(w io.Writer, lost map[EventType]uint64) {
	fmt.Fprintln(w, "\nSummary")
	if len(s.byReason) == 0 {
		fmt.Fprintln(w, "  no events")
	}
	reasons := make([]summaryKey, 0, len(s.byReason))
	for k := range s.byReason {
		reasons = append(reasons, k)
	}
	sort.Slice(reasons, func(i, j int) bool {
		if reasons[i].event != reasons[j].event {
			return reasons[i].event < reasons[j].event
		}
		return reasons[i].reason < reasons[j].reason
	})
	for _, k := range reasons {
		fmt.Fprintf(w, "  %-18s %-24s %10d\n", k.event, printable(string(k.reason)), s.byReason[k])
	}
	conns := make([]connKey, 0, len(s.byConn))
	for k := range s.byConn {
		conns = append(conns, k)
	}
	sort.Slice(conns, func(i, j int) bool { return s.byConn[conns[i]] > s.byConn[conns[j]] })
	if len(conns) > 0 {
		fmt.Fprintln(w, "  by connection:")
	}
	for i, k := range conns {
		if i == 20 {
			fmt.Fprintf(w, "  ... and %d more connections\n", len(conns)-20)
			break
		}
		fmt.Fprintf(w, "  %-18s %7d %-15s %-22s -> %-22s %10d\n", k.event, k.pid, printable(k.comm), k.local, k.remote, s.byConn[k])
	}
	var total uint64
	for _, n := range lost {
		total += n
	}
	if total == 0 {
		fmt.Fprintln(w, "  lost events: 0")
		return
	}
	for _, t := range AllEventTypes() {
		if lost[t] > 0 {
			fmt.Fprintf(w, "  lost events: %d %s records did not fit in the ring buffer (their counts were carried into later lines where the aggregation table had room)\n", lost[t], t)
		}
	}
}

// WriteSkipped reports program runs the kernel skipped (Tracer.SkippedRuns):
// events in them may be missing from the counts above. Nothing when none.
func WriteSkipped(w io.Writer, skipped map[string]uint64) {
	names := make([]string, 0, len(skipped))
	for n := range skipped {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  skipped runs: %d of %s: the kernel did not run it on these hits of its hook, a guard being held on that CPU (the program itself already running; for kprobes, any kprobe program or a bpf() map call there); events in them may be missing\n", skipped[n], n)
	}
}
