package tracer

import (
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// isConnEvent: connection set-up and teardown events (bpf/connect.bpf.c),
// which carry a conn_snapshot.
func (t EventType) isConnEvent() bool {
	return t >= SynRetransmit && t <= Reset
}

func wantsConnEvents(events []EventType) bool {
	for _, e := range events {
		if e.isConnEvent() {
			return true
		}
	}
	return false
}

// Reasons of connection events.
const (
	ReasonNoSynAck        Reason = "no_syn_ack"         // syn_retransmit, connect_timeout
	ReasonResetAnswer     Reason = "reset_answered_syn" // connect_refused
	ReasonNoFreePort      Reason = "no_free_local_port" // port_exhaustion
	ReasonTimewaitLimit   Reason = "tw_buckets_full"    // timewait_overflow
	ReasonResetSent       Reason = "sent"               // reset
	ReasonResetReceived   Reason = "received"           // reset
	ReasonPawsTimewait    Reason = "timewait_paws"      // paws_reject by reason
	ReasonPawsEstablished Reason = "established_paws"
	ReasonPawsOldAck      Reason = "old_ack"
	ReasonPawsTSecr       Reason = "bad_tsecr"
)

// pawsRecomputed is the drop_reason bpf/connect.bpf.c gives a PAWS reject in
// TIME_WAIT that it recognised itself (PAWS_RECOMPUTED).
const pawsRecomputed = 0xffffffff

var pawsReasonOf = map[string]Reason{
	"TCP_RFC7323_PAWS":     ReasonPawsEstablished,
	"TCP_RFC7323_TW_PAWS":  ReasonPawsTimewait,
	"TCP_RFC7323_PAWS_ACK": ReasonPawsOldAck,
	"TCP_RFC7323_TSECR":    ReasonPawsTSecr,
}

// ConnState is a connection's state at a set-up or teardown event, in
// natural units, with what the kernel's settings mean for it.
type ConnState struct {
	State      string
	OwnerKnown bool
	// StartKnown: tcptrace saw the connect(), so Elapsed and SynRetransmits
	// are real.
	StartKnown     bool
	Elapsed        time.Duration // since connect()'s first SYN
	SynRetransmits uint32
	Errno          unix.Errno // connect_timeout/refused: what connect() returns
	// TransmitErr: syn_retransmit (6.17+, fentry, kprobe): the transmit
	// failed on this host after the kernel counted the retransmit
	// (negative errno, or a positive NET_XMIT_* code).
	TransmitErr int32
	// Counted is how many of the kernel's SYN retransmits the line stands
	// for: more than 1 when failed ones (before 6.17) went unseen.
	Counted uint64
	// AttemptLo, AttemptHi: a syn_retransmit line aggregated per destination
	// (several connections retransmitting to it): the range of attempt
	// numbers among the retransmits it counts. 0 on a line of its own.
	AttemptLo, AttemptHi uint32

	SynKnown    bool
	SynRetries  uint8 // net.ipv4.tcp_syn_retries
	SynCnt      uint8 // TCP_SYNCNT, 0 = the sysctl
	LinearKnown bool  // the kernel has tcp_syn_linear_timeouts (6.5+)
	Linear      uint8
	UserTimeout time.Duration
	RTOMax      time.Duration // 0: TCP_RTO_MAX

	PortsKnown bool
	PortLo     uint32
	PortHi     uint32
	TwReuse    uint8
	TwKnown    bool
	TwCount    uint32
	MaxTw      uint32
	// TwToDest is the number of TIME_WAIT sockets to the event's destination
	// (-1: unknown), read from /proc/<pid>/net/tcp{,6} of the process.
	TwToDest int

	// Seq: paws_reject, the segment's sequence number; syn_retransmit, the
	// SYN's (the connection's ISN).
	Seq uint32
	// RFC1337: paws_reject, net.ipv4.tcp_rfc1337 of the refusing socket's
	// namespace (RFC1337Known: read).
	RFC1337      uint8
	RFC1337Known bool

	DropReason string // paws_reject: the kernel's drop reason
	// PawsRecomputed: before 6.16 (fentry, kprobe) a PAWS reject in
	// TIME_WAIT has no drop reason; tcptrace applied the kernel's test.
	PawsRecomputed bool
	SYN            bool // paws_reject: the segment was a SYN
	TSSeen         bool
	TSval, TSecr   uint32
	TSRecentKnown  bool
	TSRecent       uint32

	Side      string // reset: "sent" or "received"
	RstReason string // reset sent, 6.10+
	Unacked   uint32
	Unread    uint32
}

// RetryLimit is the retry count that applies: TCP_SYNCNT, else the sysctl.
func (c *ConnState) RetryLimit() int {
	if c.SynCnt != 0 {
		return int(c.SynCnt)
	}
	return int(c.SynRetries)
}

func (c *ConnState) synModel() synModel {
	m := synModel{retries: c.RetryLimit(), userTimeout: c.UserTimeout, rtoMax: c.RTOMax}
	if c.LinearKnown {
		m.linear = int(c.Linear)
	}
	return m
}

// PortCount is the size of ip_local_port_range (connect() uses every port
// of it; bind(0) the other half since 4.6, but both exhaust it).
func (c *ConnState) PortCount() int {
	if c.PortHi < c.PortLo {
		return 0
	}
	return int(c.PortHi-c.PortLo) + 1
}

func newConnState(r *tcptraceConnSnapshot, hz uint64, names *connFacts) ConnState {
	c := ConnState{
		State:          stateName(r.State),
		OwnerKnown:     r.OwnerKnown != 0,
		StartKnown:     r.StartKnown != 0,
		Elapsed:        time.Duration(r.ElapsedNs),
		SynRetransmits: r.SynRtx,
		SynKnown:       r.LimitsKnown&uint8(tcptraceConnLimitsLIMIT_SYN) != 0,
		SynRetries:     r.SynRetries,
		SynCnt:         r.Syncnt,
		LinearKnown:    r.LimitsKnown&uint8(tcptraceConnLimitsLIMIT_SYN_LINEAR) != 0,
		Linear:         r.SynLinearTimeouts,
		UserTimeout:    time.Duration(r.UserTimeoutMs) * time.Millisecond,
		PortsKnown:     r.LimitsKnown&uint8(tcptraceConnLimitsLIMIT_PORTS) != 0,
		PortLo:         r.PortLo,
		PortHi:         r.PortHi,
		TwReuse:        r.TwReuse,
		TwKnown:        r.LimitsKnown&uint8(tcptraceConnLimitsLIMIT_TW) != 0,
		TwCount:        r.TwCount,
		MaxTw:          r.MaxTwBuckets,
		TwToDest:       -1,
		SYN:            r.TcpFlags&0x02 != 0,
		TSSeen:         r.TsSeen != 0,
		TSval:          r.Tsval,
		TSecr:          r.Tsecr,
		TSRecentKnown:  r.TsRecentKnown != 0,
		TSRecent:       r.TsRecent,
		Unacked:        r.Unacked,
		Unread:         r.Unread,
		Seq:            r.Seq,
		RFC1337:        r.Rfc1337,
		RFC1337Known:   r.Rfc1337Known != 0,
	}
	if !c.StartKnown {
		// Connect made before tcptrace started: the kernel's own count.
		c.SynRetransmits = uint32(r.Retransmits)
	}
	if r.RtoMax != 0 && hz != 0 {
		c.RTOMax = time.Duration(uint64(r.RtoMax) * uint64(time.Second) / hz)
	}
	if r.DropReason == pawsRecomputed {
		c.PawsRecomputed = true
	} else if names != nil {
		c.DropReason = names.dropReasons[r.DropReason]
		if r.RstReasonKnown != 0 {
			c.RstReason = names.rstReasons[r.RstReason]
		}
	}
	switch r.Side {
	case 1:
		c.Side = "sent"
	case 2:
		c.Side = "received"
	}
	return c
}

func connAddrs(r *tcptraceConnSnapshot) (family int, local, remote netip.AddrPort) {
	if r.Family == unix.AF_INET6 {
		return 6, netip.AddrPortFrom(netip.AddrFrom16(r.Saddr).Unmap(), r.Sport),
			netip.AddrPortFrom(netip.AddrFrom16(r.Daddr).Unmap(), r.Dport)
	}
	return 4, netip.AddrPortFrom(netip.AddrFrom4([4]byte(r.Saddr[:4])), r.Sport),
		netip.AddrPortFrom(netip.AddrFrom4([4]byte(r.Daddr[:4])), r.Dport)
}

func (d *decoder) decodeConn(r *tcptraceEvent, t tally) Event {
	c := newConnState(&r.C, d.hz, d.conn)
	typ := EventType(r.Type)
	e := Event{
		Time:   d.wall(r.TsNs),
		Type:   typ,
		NetNS:  r.C.Netns,
		Count:  t.count,
		Path:   ProbePath(r.Path),
		Socket: r.C.Sk,
	}
	if c.OwnerKnown {
		e.PID, e.TID, e.Comm = r.Pid, r.Tid, cString(r.Comm[:])
	} else if d.owners != nil && r.C.Ino != 0 {
		e.PID, e.Comm = d.owners.lookup(r.C.Ino)
	}
	e.Family, e.Local, e.Remote = connAddrs(&r.C)
	switch {
	case typ == SynRetransmit:
		c.TransmitErr, c.Counted = r.Ret, r.Count
		c.AttemptLo, c.AttemptHi = t.attemptLo, t.attemptHi
	case r.Ret < 0:
		c.Errno = unix.Errno(-r.Ret)
	}
	if typ == PortExhaustion && e.PID != 0 {
		c.TwToDest = timeWaitTo(e.PID, e.Remote)
	}
	e.Reason = classifyConn(typ, &c)
	e.Conn = c
	e.Details = connDetails(typ, &c, r)
	cause := ""
	switch typ {
	case PawsReject:
		d.fates.note(&e)
	case SynRetransmit:
		if v, ok := d.fates.find(&e); ok {
			v.details(e.Details, &e)
			cause = v.sentence(&e)
		}
	}
	e.Explanation = explainConn(typ, &c, e.Remote, t.count, cause)
	return e
}

func classifyConn(t EventType, c *ConnState) Reason {
	switch t {
	case SynRetransmit, ConnectTimeout:
		return ReasonNoSynAck
	case ConnectRefused:
		return ReasonResetAnswer
	case PortExhaustion:
		return ReasonNoFreePort
	case TimewaitOverflow:
		return ReasonTimewaitLimit
	case PawsReject:
		if c.PawsRecomputed {
			return ReasonPawsTimewait
		}
		if r, ok := pawsReasonOf[c.DropReason]; ok {
			return r
		}
	case Reset:
		if c.Side == "sent" {
			return ReasonResetSent
		}
		return ReasonResetReceived
	}
	return ReasonUnknown
}

// connDetails lists every number read, with its unit in the key.
func connDetails(t EventType, c *ConnState, r *tcptraceEvent) map[string]any {
	d := map[string]any{
		"probe":       ProbePath(r.Path).String(),
		"owner_known": c.OwnerKnown,
	}
	if r.C.Ino != 0 {
		d["socket_inode"] = r.C.Ino
	}
	switch t {
	case SynRetransmit, ConnectTimeout, ConnectRefused:
		d["state"] = c.State
		if c.StartKnown {
			d["since_connect_ms"] = ms(c.Elapsed)
		}
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
	case PortExhaustion:
		d["errno"] = "EADDRNOTAVAIL"
		if c.PortsKnown {
			d["ip_local_port_range"] = fmt.Sprintf("%d %d", c.PortLo, c.PortHi)
			d["local_ports"] = c.PortCount()
			d["tcp_tw_reuse"] = c.TwReuse
		}
		if c.TwToDest >= 0 {
			d["timewait_to_destination"] = c.TwToDest
		}
		fallthrough
	case TimewaitOverflow:
		if c.TwKnown {
			d["timewait_in_netns"] = c.TwCount
			d["tcp_max_tw_buckets"] = c.MaxTw
		}
	case PawsReject:
		d["drop_reason"] = c.DropReason
		if c.PawsRecomputed {
			d["drop_reason"] = "none (TIME_WAIT before 6.16: PAWS test applied by tcptrace)"
		}
		d["syn"] = c.SYN
		d["state"] = c.State
		d["seq"] = c.Seq
		if c.RFC1337Known {
			d["tcp_rfc1337"] = c.RFC1337
		}
		if c.TSSeen {
			d["tsval"] = c.TSval
			d["tsecr"] = c.TSecr
		}
		if c.TSRecentKnown {
			d["ts_recent"] = c.TSRecent
			if c.TSSeen {
				d["tsval_behind_by"] = int32(c.TSRecent - c.TSval)
			}
		}
	case Reset:
		d["side"] = c.Side
		d["state"] = c.State
		d["unacked_bytes"] = c.Unacked
		d["unread_bytes"] = c.Unread
		if c.RstReason != "" {
			d["rst_reason"] = c.RstReason
		}
	}
	return d
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
