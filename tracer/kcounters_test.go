package tracer

import (
	"bytes"
	"strings"
	"testing"
)

const netstatSample = `TcpExt: SyncookiesSent DelayedACKs DelayedACKLocked ListenOverflows
TcpExt: 0 29 1 3
IpExt: InNoRoutes InTruncatedPkts
IpExt: 0 0
`

func TestParseTcpExt(t *testing.T) {
	m, err := parseTcpExt(strings.NewReader(netstatSample))
	if err != nil {
		t.Fatal(err)
	}
	if m["DelayedACKs"] != 29 || m["DelayedACKLocked"] != 1 || m["ListenOverflows"] != 3 || len(m) != 4 {
		t.Errorf("parsed %v", m)
	}
	for _, bad := range []string{
		"IpExt: A B\nIpExt: 1 2\n",
		"TcpExt: A B\nTcpExt: 1\n",
		"TcpExt: A B\nTcpExt: 1 x\n",
	} {
		if _, err := parseTcpExt(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestCompareCounters(t *testing.T) {
	checks := []counterCheck{{terms: []countTerm{{event: DelayedACK}}, counter: "DelayedACKs", related: []string{"DelayedACKLocked"}}}
	start := netstats{
		1: {"DelayedACKs": 10, "DelayedACKLocked": 2},
		2: {"DelayedACKs": 5},
		3: {"DelayedACKs": 7},
	}
	end := netstats{
		1: {"DelayedACKs": 39, "DelayedACKLocked": 3}, // 29, one locked
		2: {"DelayedACKs": 5},                         // nothing happened
		3: {"DelayedACKs": 9},                         // 2, and 3 seen: one came before the first reading
		4: {"DelayedACKs": 100},                       // not read at the start
	}
	seen := seenCounts{{event: DelayedACK}: {1: 27, 3: 3}}
	got := compareCounters(checks, start, end, seen)
	if len(got) != 2 {
		t.Fatalf("got %+v, want namespaces 1 and 3", got)
	}
	if c := got[0]; c.NetNS != 1 || c.Kernel != 29 || c.Seen != 27 || c.notSeen() != 2 || c.Related["DelayedACKLocked"] != 1 {
		t.Errorf("netns 1: %+v (not seen %d)", c, c.notSeen())
	}
	if c := got[1]; c.NetNS != 3 || c.Kernel != 2 || c.Seen != 3 || c.notSeen() != 0 {
		t.Errorf("netns 3: %+v", c)
	}
}

const snmpSample = `Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens RetransSegs
Tcp: 1 200 120000 -1 12 57
Udp: InDatagrams NoPorts
Udp: 3 0
`

func TestParseSnmpTcp(t *testing.T) {
	m, err := parseMIB(strings.NewReader(snmpSample), "Tcp:")
	if err != nil {
		t.Fatal(err)
	}
	if m["RetransSegs"] != 57 || m["ActiveOpens"] != 12 || m["MaxConn"] != 0 {
		t.Errorf("parsed %v", m)
	}
}

// RetransSegs counts SYN retransmits too: the retransmit event is the
// counter less TCPSynRetrans.
func TestCompareCountersMinus(t *testing.T) {
	checks := []counterCheck{{terms: []countTerm{{event: Retransmit}}, counter: "RetransSegs", minus: []string{"TCPSynRetrans"}}}
	start := netstats{1: {"RetransSegs": 100, "TCPSynRetrans": 10}}
	end := netstats{1: {"RetransSegs": 160, "TCPSynRetrans": 14}}
	got := compareCounters(checks, start, end, seenCounts{{event: Retransmit}: {1: 56}})
	if len(got) != 1 || got[0].Kernel != 56 || got[0].Seen != 56 || got[0].Counter != "RetransSegs-TCPSynRetrans" {
		t.Errorf("got %+v", got)
	}
}

// ListenOverflows counts SYNs dropped for a full accept queue and final ACKs
// that overflowed it: a sum of terms, one of them a single reason, counted
// from the events as they are emitted.
func TestCompareCountersTerms(t *testing.T) {
	c := counterCheck{terms: []countTerm{{SynDrop, reasonAcceptQueueFull}, {event: ListenOverflow}}, counter: "ListenOverflows"}
	seen := seenCounts{}
	for _, term := range c.terms {
		seen[term] = map[uint32]uint64{}
	}
	for _, e := range []Event{
		{Type: SynDrop, Reason: reasonAcceptQueueFull, NetNS: 1, Count: 12},
		{Type: SynDrop, Reason: reasonSynQueueFull, NetNS: 1, Count: 5}, // not this counter's
		{Type: ListenOverflow, Reason: reasonAcceptQueueFull, NetNS: 1, Count: 3},
		{Type: SynCookie, Reason: reasonSynQueueFull, NetNS: 1, Count: 7}, // nor this
		{Type: SynDrop, Reason: reasonAcceptQueueFull, NetNS: 2, Count: 1},
	} {
		seen.add(&e)
	}
	start := netstats{1: {"ListenOverflows": 100}, 2: {"ListenOverflows": 0}}
	end := netstats{1: {"ListenOverflows": 116}, 2: {"ListenOverflows": 1}}
	got := compareCounters([]counterCheck{c}, start, end, seen)
	if len(got) != 2 || got[0].NetNS != 1 || got[0].Kernel != 16 || got[0].Seen != 15 || got[1].Kernel != 1 || got[1].Seen != 1 {
		t.Fatalf("got %+v", got)
	}
	var b bytes.Buffer
	WriteCounterChecks(&b, got[:1])
	if want := "not seen: 1 syn_drop[accept_queue_full]+listen_overflow in netns 1: the kernel's ListenOverflows went up by 16, tcptrace reported 15;"; !strings.Contains(b.String(), want) {
		t.Errorf("%s\nwant it to contain\n%s", b.String(), want)
	}
	if !c.within([]EventType{SynDrop, ListenOverflow}) || c.within([]EventType{SynDrop}) {
		t.Errorf("a check is meaningful only with all its events traced")
	}
}

func TestCounterChecksFor(t *testing.T) {
	all := Options{Events: AllEventTypes()}
	var counters []string
	for _, c := range counterChecksFor(all) {
		counters = append(counters, c.counter)
	}
	if got, want := strings.Join(counters, " "), "ListenOverflows TCPReqQFullDrop TCPReqQFullDoCookies DelayedACKs RetransSegs"; got != want {
		t.Errorf("host-wide, every event: %s, want %s", got, want)
	}
	for name, o := range map[string]Options{
		"--pid":      {Events: AllEventTypes(), PIDs: []uint32{1}},
		"--port":     {Events: AllEventTypes(), Port: 80},
		"-4":         {Events: AllEventTypes(), Family: 4},
		"no delayed": {Events: []EventType{SendEAGAIN}},
	} {
		if got := counterChecksFor(o); len(got) != 0 {
			t.Errorf("%s: %+v, want no check (the counter counts what the run does not)", name, got)
		}
	}
}

func TestWriteCounterChecks(t *testing.T) {
	var b bytes.Buffer
	WriteCounterChecks(&b, []CounterCheck{
		{What: "delayed_ack", Counter: "DelayedACKs", NetNS: 1, Kernel: 29, Seen: 28, Related: map[string]uint64{"DelayedACKLocked": 0}},
		{What: "delayed_ack", Counter: "DelayedACKs", NetNS: 2, Kernel: 5, Seen: 5, Related: map[string]uint64{"DelayedACKLocked": 0}},
		{What: "delayed_ack", Counter: "DelayedACKs", NetNS: 3, Kernel: 5, Seen: 6},
	})
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	want := []string{
		"not seen: 1 delayed_ack in netns 1: the kernel's DelayedACKs went up by 29 (DelayedACKLocked +0), tcptrace reported 28;",
		"kernel agrees: DelayedACKs +5 in netns 2 (DelayedACKLocked +0), delayed_ack 5",
		"kernel counter: DelayedACKs +5 in netns 3, delayed_ack 6: the 1 more came between attaching",
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines:\n%s", len(lines), b.String())
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("line %d:\n%s\nwant it to contain\n%s", i, lines[i], w)
		}
	}
}
