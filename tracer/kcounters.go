package tracer

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

// The kernel counts some of the events tcptrace reports in its own SNMP
// counters (/proc/net/netstat, per network namespace). Reading them at the
// start and the end of a run lets the summary say how many the probes did not
// see, instead of leaving a shortfall silent: a firing the tracepoint path
// cannot see (deferred to tcp_release_cb()), or a stretch of time in which a
// CPU ran no tracing program at all (measured on a 6.18 guest: a few ms at a
// time while the hypervisor's own agent ran, sched_switch included).
//
// The check is made only where tcptrace's count and the counter mean the same
// thing: an event the kernel bumps the counter for exactly once, and no filter
// (--pid, --port, -4/-6) in the run. Each detector lists its checks
// (detector.counters).
type counterCheck struct {
	// terms: what tcptrace reports that the counter counts, summed.
	terms   []countTerm
	counter string   // TcpExt field, or Tcp (/proc/net/snmp)
	related []string // printed beside it: counters that explain a shortfall
	// minus: counters that count what the counter does beyond the event
	// (RetransSegs counts SYN retransmits too: TCPSynRetrans); the event's
	// count is the counter less these.
	minus []string
}

// countTerm is events of one type that a kernel counter counts: of one
// reason, or (reason "") of every reason.
type countTerm struct {
	event  EventType
	reason Reason
}

func (c countTerm) String() string {
	if c.reason == "" {
		return c.event.String()
	}
	return fmt.Sprintf("%s[%s]", c.event, c.reason)
}

// what names the terms as the summary prints them: one word, the terms
// joined by "+".
func (c counterCheck) what() string {
	parts := make([]string, len(c.terms))
	for i, t := range c.terms {
		parts[i] = t.String()
	}
	return strings.Join(parts, "+")
}

// seenCounts is what tcptrace reported of each checked term, per network
// namespace.
type seenCounts map[countTerm]map[uint32]uint64

// add counts an event under the terms it belongs to.
func (s seenCounts) add(e *Event) {
	if byNS := s[countTerm{event: e.Type}]; byNS != nil {
		byNS[e.NetNS] += e.Count
	}
	if e.Reason == "" {
		return
	}
	if byNS := s[countTerm{e.Type, e.Reason}]; byNS != nil {
		byNS[e.NetNS] += e.Count
	}
}

// netstats is the TcpExt counters of each network namespace, by inode.
type netstats map[uint32]map[string]uint64

// parseTcpExt reads the TcpExt pairs of lines (names, then values) of a
// /proc/net/netstat.
func parseTcpExt(r io.Reader) (map[string]uint64, error) { return parseMIB(r, "TcpExt:") }

// parseMIB reads one group's pair of lines (names, then values) of
// /proc/net/netstat or /proc/net/snmp: "TcpExt:", "Tcp:".
func parseMIB(r io.Reader, group string) (map[string]uint64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var names []string
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != group {
			names = nil
			continue
		}
		if names == nil {
			names = f[1:]
			continue
		}
		if len(f)-1 != len(names) {
			return nil, fmt.Errorf("%s %d names, %d values", group, len(names), len(f)-1)
		}
		out := make(map[string]uint64, len(names))
		for i, n := range names {
			// Tcp's MaxConn is -1: not a counter.
			v, err := strconv.ParseUint(f[i+1], 10, 64)
			if err != nil && n != "MaxConn" {
				return nil, fmt.Errorf("%s %s: %w", group, n, err)
			}
			out[n] = v
		}
		return out, sc.Err()
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("no %s counters", strings.TrimSuffix(group, ":"))
}

// readNetstats reads the counters of every namespace in use. One that cannot
// be read (gone meanwhile) is left out, and so left out of the check.
func readNetstats() netstats {
	out := netstats{}
	for ino, path := range netnsPaths() {
		var m map[string]uint64
		// TcpExt from netstat, Tcp (RetransSegs) from snmp: the names
		// do not collide.
		read := func(dir string) error {
			var err error
			if m, err = readMIB(dir+"/netstat", "TcpExt:"); err != nil {
				return err
			}
			tcp, err := readMIB(dir+"/snmp", "Tcp:")
			if err != nil {
				return err
			}
			for k, v := range tcp {
				m[k] = v
			}
			return nil
		}
		var err error
		if pid, ok := strings.CutSuffix(path, "/ns/net"); ok && strings.HasPrefix(pid, "/proc/") {
			// /proc/<pid>/net shows that process's namespace: no setns.
			err = read(pid + "/net")
		} else {
			err = inNetns(path, func() error { return read("/proc/thread-self/net") })
		}
		if err == nil {
			out[uint32(ino)] = m
		}
	}
	return out
}

func readMIB(file, group string) (map[string]uint64, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseMIB(f, group)
}

// CounterCheck is one namespace's counter against what tcptrace reported.
type CounterCheck struct {
	What    string // the events counted, as "syn_drop[accept_queue_full]+listen_overflow"
	Counter string // the counter, "-" each one subtracted
	NetNS   uint32
	Kernel  uint64            // the counter's increase over the run
	Seen    uint64            // what tcptrace reported in that namespace
	Related map[string]uint64 // increases of the related counters
}

// notSeen is how many the kernel counted beyond what tcptrace reported.
// Events in the moments between attaching and the first reading (and the
// last reading and detaching) are seen but not in Kernel, so a shortfall can
// be hidden by them, never made up.
func (c CounterCheck) notSeen() uint64 {
	if c.Kernel > c.Seen {
		return c.Kernel - c.Seen
	}
	return 0
}

// compareCounters lists, per namespace read at both ends where the counter
// moved or tcptrace saw something, the kernel's increase beside tcptrace's
// count. A namespace read only at the end is left out: one that existed at
// the start but could not be read then would show its whole history.
func compareCounters(checks []counterCheck, start, end netstats, seen seenCounts) []CounterCheck {
	var out []CounterCheck
	for _, c := range checks {
		first := len(out)
		for ns, after := range end {
			before, ok := start[ns]
			if !ok {
				continue
			}
			k := after[c.counter] - before[c.counter]
			name := c.counter
			for _, m := range c.minus {
				k -= after[m] - before[m]
				name += "-" + m
			}
			var s uint64
			for _, t := range c.terms {
				s += seen[t][ns]
			}
			if k == 0 && s == 0 {
				continue
			}
			cc := CounterCheck{What: c.what(), Counter: name, NetNS: ns, Kernel: k, Seen: s, Related: map[string]uint64{}}
			for _, r := range c.related {
				cc.Related[r] = after[r] - before[r]
			}
			out = append(out, cc)
		}
		// The checks in the descriptors' order, each by namespace.
		sort.Slice(out[first:], func(i, j int) bool { return out[first+i].NetNS < out[first+j].NetNS })
	}
	return out
}

// counterChecksFor returns the checks that mean something for this run.
func counterChecksFor(opts Options) []counterCheck {
	if len(opts.PIDs) > 0 || len(opts.Cgroups) > 0 || opts.Port != 0 || opts.Family != 0 {
		return nil
	}
	var out []counterCheck
	for _, d := range detectors {
		for _, c := range d.counters {
			if c.within(opts.Events) {
				out = append(out, c)
			}
		}
	}
	return out
}

// within: every event the check counts is among these (a check over an
// event not reported would find it short).
func (c counterCheck) within(events []EventType) bool {
	for _, t := range c.terms {
		if !containsEvent(events, t.event) {
			return false
		}
	}
	return true
}

// WriteCounterChecks prints, per namespace, whether the kernel's counter
// agrees with tcptrace's count, and what was not seen when it does not.
func WriteCounterChecks(w io.Writer, checks []CounterCheck) {
	for _, c := range checks {
		var rel []string
		for _, name := range sortedKeys(c.Related) {
			rel = append(rel, fmt.Sprintf("%s +%d", name, c.Related[name]))
		}
		related := ""
		if len(rel) > 0 {
			related = " (" + strings.Join(rel, ", ") + ")"
		}
		switch {
		case c.Kernel > c.Seen:
			fmt.Fprintf(w, "  not seen: %d %s in netns %d: the kernel's %s went up by %d%s, tcptrace reported %d; its probes missed them (docs/probes.md, \"Counts against the kernel's\")\n",
				c.notSeen(), c.What, c.NetNS, c.Counter, c.Kernel, related, c.Seen)
		case c.Kernel == c.Seen:
			fmt.Fprintf(w, "  kernel agrees: %s +%d in netns %d%s, %s %d\n", c.Counter, c.Kernel, c.NetNS, related, c.What, c.Seen)
		default:
			fmt.Fprintf(w, "  kernel counter: %s +%d in netns %d%s, %s %d: the %d more came between attaching and the first reading of the counter, or the last reading and detaching\n",
				c.Counter, c.Kernel, c.NetNS, related, c.What, c.Seen, c.Seen-c.Kernel)
		}
	}
}

func sortedKeys(m map[string]uint64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
