package tracer

import (
	"fmt"
	"io"
	"time"

	"golang.org/x/sys/unix"
)

// The connect detector (bpf/connect.bpf.c): a connect() whose SYN got no
// answer (syn_retransmit, connect_timeout) or a reset (connect_refused).
const (
	SynRetransmit  EventType = EventType(tcptraceEventTypeEVENT_SYN_RETRANSMIT)
	ConnectTimeout EventType = EventType(tcptraceEventTypeEVENT_CONNECT_TIMEOUT)
	ConnectRefused EventType = EventType(tcptraceEventTypeEVENT_CONNECT_REFUSED)
)

const (
	reasonNoSynAck    Reason = "no_syn_ack"         // syn_retransmit, connect_timeout
	reasonResetAnswer Reason = "reset_answered_syn" // connect_refused
)

var connectDetector = &detector{
	name: "connect",
	events: []eventSpec{{SynRetransmit, "syn_retransmit"}, {ConnectTimeout, "connect_timeout"},
		{ConnectRefused, "connect_refused"}},
	reasons: []Reason{reasonNoSynAck, reasonResetAnswer},
	probes: []probeSet{
		{
			events: []EventType{SynRetransmit, ConnectTimeout, ConnectRefused},
			paths: []pathSpec{
				{path: PathTracepoint, hooks: "tp_btf/inet_sock_set_state + tp_btf/tcp_retransmit_skb (with err, 6.17+)",
					progs: attach("tp_inet_sock_set_state", "tp_tcp_retransmit_skb_err"), requires: needRetransmitErr(true), enable: hookConnect | hookSynRtx},
				{path: PathTracepoint, hooks: "tp_btf/inet_sock_set_state + tp_btf/tcp_retransmit_skb",
					progs: attach("tp_inet_sock_set_state", "tp_tcp_retransmit_skb"), requires: needRetransmitErr(false), enable: hookConnect | hookSynRtx},
				{path: PathFentry, hooks: "fentry/tcp_connect + fexit/tcp_retransmit_skb + fentry/tcp_done",
					progs: attach("fentry_tcp_connect", "fexit_tcp_retransmit_skb", "fentry_tcp_done"), enable: hookSynRtx},
				{path: PathKprobe, hooks: "kprobe/tcp_connect + kprobe+kretprobe/tcp_retransmit_skb + kprobe/tcp_done",
					progs: attach("kprobe_tcp_connect", "kprobe_tcp_retransmit_skb", "kretprobe_tcp_retransmit_skb", "kprobe_tcp_done"), enable: hookSynRtx},
			},
		},
	},
	needs: needs{owners: true, connFacts: true},
	// A line of several connections to one destination has the latest
	// connection's time, counted for each.
	durations: []durationSpec{{
		name: "connect_failure", events: []EventType{ConnectTimeout, ConnectRefused},
		help: "Time from connect() to its timeout or refusal.",
		sum: func(e *Event) (time.Duration, bool) {
			return e.conn.Elapsed * time.Duration(e.Count), e.conn.StartKnown
		},
	}},
	decode:  decodeConnect,
	explain: func(e Event, t tally) string { return explainConnect(e.Type, &e.conn, e.Remote, t.count) },
}

// needRetransmitErr: tcp:tcp_retransmit_skb gained an `err` argument in 6.17
// and fires for failed attempts too; each prototype has its program.
func needRetransmitErr(want bool) func(*kernelFacts) error {
	return needPrototype(want, func(f *connFacts) bool { return f.rtxErrArg },
		"tcp:tcp_retransmit_skb has no err argument (added in 6.17)",
		"for kernels whose tcp:tcp_retransmit_skb has no err argument (before 6.17)")
}

func decodeConnect(d *decoder, r *tcptraceEvent, t tally) Event {
	e := decodeConn(d, r, t)
	c := &e.conn
	e.Reason = reasonNoSynAck
	if e.Type == ConnectRefused {
		e.Reason = reasonResetAnswer
	}
	if e.Type == SynRetransmit {
		c.Errno = 0
		c.TransmitErr, c.Counted = r.Ret, r.Count
		c.AttemptLo, c.AttemptHi = t.attemptLo, t.attemptHi
	}
	connectDetails(e.Details, e.Type, c)
	if e.Type == SynRetransmit {
		// What a socket on this host did to the SYN (connect_cause.go),
		// said instead of suspecting the path.
		if v, ok := d.fates.find(&e); ok {
			v.details(e.Details, &e)
			c.cause = v.sentence(&e)
		}
	}
	return e
}

// connectDetails adds every number read, with its unit in the key.
func connectDetails(d map[string]any, t EventType, c *connState) {
	d["state"] = c.State
	optMs(d, "since_connect_ms", c.Elapsed, c.StartKnown)
	d["syn_retransmits"] = c.SynRetransmits
	if t != SynRetransmit {
		d["errno"] = errnoName(c.Errno)
	} else if c.TransmitErr != 0 {
		d["transmit_error"] = transmitErrName(c.TransmitErr)
	}
	if t == SynRetransmit {
		d["isn"] = c.Seq
	}
	if t == SynRetransmit && c.AttemptLo != 0 {
		d["attempt_min"] = c.AttemptLo
		d["attempt_max"] = c.AttemptHi
	}
	if c.SynKnown && t != ConnectRefused {
		d["tcp_syn_retries"] = c.SynRetries
		d["tcp_syncnt"] = c.SynCnt
		d["tcp_user_timeout_ms"] = c.UserTimeout.Milliseconds()
		if c.LinearKnown {
			d["tcp_syn_linear_timeouts"] = c.Linear
		}
		rtx, giveUp := c.synModel().schedule()
		d["syn_retransmits_max"] = len(rtx)
		d["gives_up_after_ms"] = giveUp.Milliseconds()
		if t == SynRetransmit {
			if n := int(c.SynRetransmits); n > 0 && n <= len(rtx) {
				d["backoff_ms"] = (rtx[n-1] - prev(rtx, n-1)).Milliseconds()
			}
			if n := int(c.SynRetransmits); n < len(rtx) {
				d["next_retransmit_in_ms"] = (rtx[n] - prev(rtx, n)).Milliseconds()
			}
		}
	}
}

// retryLimit is the retry count that applies: TCP_SYNCNT, else the sysctl.
func (c *connState) retryLimit() int {
	if c.SynCnt != 0 {
		return int(c.SynCnt)
	}
	return int(c.SynRetries)
}

func (c *connState) synModel() synModel {
	m := synModel{retries: c.retryLimit(), userTimeout: c.UserTimeout, rtoMax: c.RTOMax}
	if c.LinearKnown {
		m.linear = int(c.Linear)
	}
	return m
}

// transmitErrName names what the IP layer returned for a failed transmit:
// a negative errno, or a positive NET_XMIT_* code (include/linux/netdevice.h).
func transmitErrName(v int32) string {
	switch {
	case v < 0:
		return errnoName(unix.Errno(-v))
	case v == 1:
		return "NET_XMIT_DROP"
	case v == 2:
		return "NET_XMIT_CN"
	}
	return fmt.Sprintf("NET_XMIT %d", v)
}

// prev is the time of the retransmit before index i (0: the first SYN).
func prev(rtx []time.Duration, i int) time.Duration {
	if i == 0 {
		return 0
	}
	return rtx[i-1]
}

func errnoName(e unix.Errno) string {
	if e == 0 {
		return ""
	}
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return fmt.Sprintf("errno %d", int(e))
}

// WriteSynRetransmitsUnseen reports SYN retransmits that no syn_retransmit
// line counted (Tracer.SynRetransmitsUnseen): the lines add up to
// TCPSynRetrans less these.
func WriteSynRetransmitsUnseen(w io.Writer, n uint64) {
	if n == 0 {
		return
	}
	fmt.Fprintf(w, "  SYN retransmits not seen: %d: their connections' own counters (total_retrans when connect() ended) hold %d more than the syn_retransmit lines counted (a transmit that failed, which fires no tracepoint before 6.17, or a program run the kernel did not make); the connect_timeout and connect_refused lines count them\n", n, n)
}
