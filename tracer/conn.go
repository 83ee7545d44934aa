package tracer

import (
	"time"

	"golang.org/x/sys/unix"
)

// What the connection detectors (connect, ports, timewait, paws, reset)
// share: their records carry a struct conn_snapshot (bpf/conn.bpf.h), decoded here
// into a connState; each detector adds its own numbers and explanation.

// connState is a connection's state at a set-up or teardown event, in
// natural units, with what the kernel's settings mean for it.
type connState struct {
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

	// cause, syn_retransmit: what a socket on this host did to the SYN
	// (connect_cause.go), said instead of suspecting the path.
	cause string
}

func newConnState(r *tcptraceConnSnapshot, hz uint64, names *connFacts) connState {
	c := connState{
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
		// A connect() made before tcptrace started, or whose owner record
		// the full table refused: the kernel's own count.
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

// decodeConn is what every connection event carries: the owner, the
// addresses, the connection's state, and the details every one has. The
// owner is the task in the record only when the kernel knew it; otherwise
// the socket's inode names it, for a line that stands for one event only:
// these events are aggregated per peer or destination (reset,
// syn_retransmit, connect_refused...), so a line of several may cover
// sockets of several processes (the members of a SO_REUSEPORT group), and
// the inode is its latest socket's.
func decodeConn(d *decoder, r *tcptraceEvent, t tally) Event {
	c := newConnState(&r.C, d.hz, d.conn)
	e := Event{
		Time:  d.wall(r.TsNs),
		Type:  EventType(r.Type),
		NetNS: r.C.Netns,
		Count: t.count,
		Path:  ProbePath(r.Path),
	}
	if c.OwnerKnown {
		e.PID, e.Comm = r.Pid, cString(r.Comm[:])
	} else if d.owners != nil && r.C.Ino != 0 && t.count <= 1 {
		d.ownerByInode(&e, r.C.Ino)
	}
	e.Family, e.Local, e.Remote = addrPair(r.C.Family, r.C.Saddr, r.C.Daddr, r.C.Sport, r.C.Dport)
	if r.Ret < 0 {
		c.Errno = unix.Errno(-r.Ret)
	}
	e.conn = c
	e.Details = map[string]any{
		"probe":       ProbePath(r.Path).String(),
		"owner_known": c.OwnerKnown,
	}
	if r.C.Ino != 0 {
		e.Details["socket_inode"] = r.C.Ino
	}
	return e
}
