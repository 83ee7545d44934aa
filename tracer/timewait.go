package tracer

import (
	"fmt"
	"net/netip"
	"strings"
)

// The timewait detector (bpf/timewait.bpf.c): a connection closed without
// TIME_WAIT because the namespace's TIME_WAIT sockets reached
// net.ipv4.tcp_max_tw_buckets.
const TimewaitOverflow EventType = EventType(tcptraceEventTypeEVENT_TIMEWAIT_OVERFLOW)

const reasonTimewaitLimit Reason = "tw_buckets_full"

var timewaitDetector = &detector{
	name:    "timewait",
	events:  []eventSpec{{TimewaitOverflow, "timewait_overflow"}},
	reasons: []Reason{reasonTimewaitLimit},
	probes: []probeSet{
		{
			events:    []EventType{TimewaitOverflow},
			addresses: true,
			paths: []pathSpec{
				{path: PathTracepoint, hooks: "tp_btf/inet_sock_set_state + tp_btf/timer_start (tw_timer_handler)",
					progs: attach("tp_inet_sock_set_state", "tp_timer_start"), requires: needTwTimer, enable: hookTimewait},
				{path: PathFentry, hooks: "fexit/inet_twsk_alloc",
					progs: attach("fexit_inet_twsk_alloc")},
				{path: PathKprobe, hooks: "kprobe+kretprobe/inet_twsk_alloc",
					progs: attach("kprobe_inet_twsk_alloc", "kretprobe_inet_twsk_alloc")},
			},
		},
	},
	needs:   needs{owners: true, connFacts: true},
	decode:  decodeTimewait,
	explain: func(e Event, t tally) string { return explainTimewait(&e.conn, e.Remote, t.count) },
}

func needTwTimer(k *kernelFacts) error {
	f, err := connFactsOf(k)
	if err != nil {
		return err
	}
	if f.twTimerHandler == 0 {
		return fmt.Errorf("the TIME_WAIT timer's address is unknown: %v", f.twTimerErr)
	}
	return nil
}

func decodeTimewait(d *decoder, r *tcptraceEvent, t tally) Event {
	e := decodeConn(d, r, t)
	e.Reason = reasonTimewaitLimit
	timewaitDetails(e.Details, &e.conn)
	return e
}

// timewaitDetails: the namespace's TIME_WAIT sockets against their limit
// (timewait_overflow, and port_exhaustion, whose ports TIME_WAIT holds).
func timewaitDetails(d map[string]any, c *connState) {
	if c.TwKnown {
		d["timewait_in_netns"] = c.TwCount
		d["tcp_max_tw_buckets"] = c.MaxTw
	}
}

func explainTimewait(c *connState, remote netip.AddrPort, count uint64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "connection to %s closed without TIME_WAIT", remote)
	if count > 1 {
		fmt.Fprintf(&b, " (and %d more)", count-1)
	}
	if c.TwKnown {
		fmt.Fprintf(&b, ": the namespace holds %d TIME_WAIT sockets, net.ipv4.tcp_max_tw_buckets=%d", c.TwCount, c.MaxTw)
	} else {
		b.WriteString(": the TIME_WAIT bucket limit net.ipv4.tcp_max_tw_buckets is reached")
	}
	b.WriteString("; a late segment of the old connection can now be taken for data of a new one with the same ports; raise tcp_max_tw_buckets, and reduce TIME_WAIT at its source: reuse connections, or have the peer close first")
	b.WriteString(".")
	return b.String()
}
