package tracer

import (
	"fmt"
	"net/netip"
	"strings"
)

// The reset detector (bpf/reset.bpf.c): a reset sent or received on an
// established connection.
const Reset EventType = EventType(tcptraceEventTypeEVENT_RESET)

const (
	reasonResetSent     Reason = "sent"
	reasonResetReceived Reason = "received"
)

var resetDetector = &detector{
	name:    "reset",
	events:  []eventSpec{{Reset, "reset"}},
	reasons: []Reason{reasonResetSent, reasonResetReceived},
	probes: []probeSet{
		{
			events: []EventType{Reset},
			paths: []pathSpec{
				{path: PathTracepoint, hooks: "tp_btf/tcp_send_reset (with reason, 6.10+) + tp_btf/tcp_receive_reset",
					progs: attach("tp_tcp_send_reset_reason", "tp_tcp_receive_reset"), requires: needSendResetReason(true)},
				{path: PathTracepoint, hooks: "tp_btf/tcp_send_reset + tp_btf/tcp_receive_reset",
					progs: attach("tp_tcp_send_reset", "tp_tcp_receive_reset"), requires: needSendResetReason(false)},
			},
		},
	},
	needs:   needs{owners: true, connFacts: true},
	decode:  decodeReset,
	explain: func(e Event, t tally) string { return explainReset(&e.conn, e.Remote, t.count) },
}

func needSendResetReason(want bool) func(*kernelFacts) error {
	return needPrototype(want, func(f *connFacts) bool { return f.sendResetReason },
		"tcp:tcp_send_reset passes no reset reason (added in 6.10)",
		"for kernels whose tcp:tcp_send_reset passes no reason (before 6.10)")
}

func decodeReset(dec *decoder, r *tcptraceEvent, t tally) Event {
	e := decodeConn(dec, r, t)
	c, d := &e.conn, e.Details
	e.Reason = reasonResetReceived
	if c.Side == "sent" {
		e.Reason = reasonResetSent
	}
	d["side"] = c.Side
	d["state"] = c.State
	d["unacked_bytes"] = c.Unacked
	d["unread_bytes"] = c.Unread
	if c.RstReason != "" {
		d["rst_reason"] = c.RstReason
	}
	return e
}

func explainReset(c *connState, remote netip.AddrPort, count uint64) string {
	var b strings.Builder
	// The line stands for every reset to or from the peer's address in
	// the interval; the ports, state and bytes are the latest one's.
	peer, latest := remote.String(), ""
	if count > 1 {
		peer, latest = fmt.Sprintf("%s and %d more", remote, count-1), "the latest "
	}
	if c.Side == "sent" {
		if count > 1 {
			latest += "in "
		}
		fmt.Fprintf(&b, "reset sent to %s (%sstate %s)", peer, latest, c.State)
		if c.RstReason != "" {
			fmt.Fprintf(&b, ", reason %s", c.RstReason)
		}
		switch {
		case c.Unread > 0:
			fmt.Fprintf(&b, ": the application closed the socket with %d bytes unread, which aborts the connection (read everything before close())", c.Unread)
		case c.State == "CLOSE":
			b.WriteString(": the application aborted the connection (SO_LINGER with a zero timeout, or shutdown of a socket with pending data); the peer gets ECONNRESET")
		default:
			b.WriteString(": this host aborted the connection (a segment it could not accept, or a timeout); the peer gets ECONNRESET")
		}
	} else {
		fmt.Fprintf(&b, "reset received from %s", peer)
		if count > 1 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, " %sin state %s", latest, c.State)
		fmt.Fprintf(&b, " with %d bytes unacknowledged and %d unread", c.Unacked, c.Unread)
		b.WriteString(": the peer aborted the connection (its process exited or was killed with the socket open, closed with unread data, or used SO_LINGER 0), or a middlebox reset it; the application gets ECONNRESET (EPIPE on a later write) and data in flight is lost")
	}
	b.WriteString(".")
	return b.String()
}
