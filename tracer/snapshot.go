package tracer

import "time"

// TCP states (include/net/tcp_states.h).
var tcpStates = [...]string{
	1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
	6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
	11: "CLOSING", 12: "NEW_SYN_RECV",
}

func stateName(s uint8) string {
	if int(s) < len(tcpStates) && tcpStates[s] != "" {
		return tcpStates[s]
	}
	return "UNKNOWN"
}

// icsk_pending values (include/net/inet_connection_sock.h). ICSK_TIME_DACK
// (2) never appears here: the delayed-ACK timer is tracked in
// icsk_ack.pending. 4 was ICSK_TIME_EARLY_RETRANS until 4.x removed it.
const (
	timerRetrans    = 1
	timerProbe0     = 3
	timerLossProbe  = 5
	timerReoTimeout = 6
)

func timerName(p uint8) string {
	switch p {
	case 0:
		return "none"
	case timerRetrans:
		return "retransmit"
	case timerProbe0:
		return "zero_window_probe"
	case timerLossProbe:
		return "loss_probe"
	case timerReoTimeout:
		return "reorder"
	}
	return "other"
}

// tp->nonagle bits (include/net/tcp.h).
const (
	nagleOff  = 1 // TCP_NODELAY
	nagleCork = 2 // TCP_CORK
)

// snapshot is a socket's state at an event, in natural units. Durations that
// the kernel keeps in jiffies are converted with the running kernel's HZ; when
// HZ is unknown they are left zero and HZKnown is false, and explanations
// leave them out rather than guess.
type snapshot struct {
	State          string
	SndbufBytes    int
	SndbufLocked   bool // the application set SO_SNDBUF, which turns off autotuning
	WmemQueued     int  // truesize of the write and retransmit queues
	UnackedBytes   uint32
	NotsentBytes   uint32
	PeerWindow     uint32
	Cwnd           uint32
	MSS            uint32
	PacketsOut     uint32
	InFlight       uint32 // tcp_packets_in_flight(): out - (sacked + lost) + retrans
	RetransOut     uint32
	LostOut        uint32
	SackedOut      uint32
	TotalRetrans   uint32
	RTORetransmits uint8 // consecutive RTO expiries without an ACK
	Backoff        uint8
	ProbesOut      uint8
	Timer          string
	TimerPending   bool
	TimerIn        time.Duration // until the pending timer's expiry; negative if overdue
	TimerFiresIn   time.Duration // until the timer wheel runs it (wheelFires): what to tell users
	RTO            time.Duration
	SinceLastACK   time.Duration
	SRTT           time.Duration
	NoDelay        bool
	Cork           bool
	NotsentLowat   uint32 // 0: the socket has none set
	MemPressure    bool   // TCP's global memory pressure flag
	MemAllocated   int64  // pages charged to TCP (tcp_mem units)
	CAState        uint8
	HZKnown        bool
	// The kernel's settings for the RTO ceiling (6.15+): TCP_RTO_MAX_MS
	// per socket, net.ipv4.tcp_rto_max_ms per namespace. Neither: the
	// ceiling is the constant TCP_RTO_MAX.
	RTOMaxSockopt bool
	RTOMaxSysctl  bool
}

// newSnapshot converts the raw kernel snapshot. hz is CONFIG_HZ, 0 if unknown.
func newSnapshot(r *tcptraceTcpSnapshot, hz uint64) snapshot {
	s := snapshot{
		State:          stateName(r.State),
		SndbufBytes:    int(r.Sndbuf),
		SndbufLocked:   r.Userlocks&1 != 0,
		WmemQueued:     int(r.WmemQueued),
		UnackedBytes:   r.SndNxt - r.SndUna,
		NotsentBytes:   r.WriteSeq - r.SndNxt,
		PeerWindow:     r.SndWnd,
		Cwnd:           r.SndCwnd,
		MSS:            r.MssCache,
		PacketsOut:     r.PacketsOut,
		RetransOut:     r.RetransOut,
		LostOut:        r.LostOut,
		SackedOut:      r.SackedOut,
		TotalRetrans:   r.TotalRetrans,
		RTORetransmits: r.Retransmits,
		Backoff:        r.Backoff,
		ProbesOut:      r.ProbesOut,
		Timer:          timerName(r.Pending),
		TimerPending:   r.Pending != 0,
		SRTT:           time.Duration(r.SrttUs>>3) * time.Microsecond,
		NoDelay:        r.Nonagle&nagleOff != 0,
		Cork:           r.Nonagle&nagleCork != 0,
		NotsentLowat:   r.NotsentLowat,
		MemPressure:    r.MemPressure != 0,
		MemAllocated:   r.MemAllocated,
		CAState:        r.CaState,
		RTOMaxSockopt:  r.RtoMaxKnobs&uint8(tcptraceRtoMaxKnobRTO_MAX_SOCKOPT) != 0,
		RTOMaxSysctl:   r.RtoMaxKnobs&uint8(tcptraceRtoMaxKnobRTO_MAX_SYSCTL) != 0,
	}
	// Signed: sacked+lost may transiently exceed packets_out's share.
	if f := int64(r.PacketsOut) - int64(r.SackedOut) - int64(r.LostOut) + int64(r.RetransOut); f > 0 {
		s.InFlight = uint32(f)
	}
	if hz > 0 {
		s.HZKnown = true
		j := func(n int64) time.Duration { return time.Duration(n) * time.Second / time.Duration(hz) }
		s.RTO = j(int64(r.Rto))
		// rcv_tstamp is tcp_jiffies32: compare in 32 bits.
		s.SinceLastACK = j(int64(int32(uint32(r.NowJiffies) - r.RcvTstamp)))
		if s.TimerPending {
			s.TimerIn = j(int64(r.TimerExpires) - int64(r.NowJiffies))
			s.TimerFiresIn = s.TimerIn
			// The retransmission timer is armed the RTO ahead.
			if r.Pending == timerRetrans {
				s.TimerFiresIn = j(int64(wheelFires(r.TimerExpires, uint64(r.Rto))) - int64(r.NowJiffies))
			}
		}
	}
	return s
}

// jiffies converts a count of the kernel's ticks; hz must not be 0.
func jiffies(n uint32, hz uint64) time.Duration {
	return time.Duration(n) * time.Second / time.Duration(hz)
}

// wheelFires is when the kernel's timer wheel runs a timer due at expires
// (jiffies) that was armed armedFor jiffies ahead (the retransmission
// timer: the RTO). Since 4.8 the wheel files a timer in a level by how far
// ahead it is, and each level rounds its expiry up to the level's
// granularity, 8^level jiffies (calc_wheel_index() and calc_index() in
// kernel/time/timer.c), so that a timer never fires early: a timer armed
// 16 s or more ahead at HZ 250 fires up to 2 s after its expiry.
func wheelFires(expires, armedFor uint64) uint64 {
	const clkShift, lvlSize = 3, 64
	lvl := uint(0)
	for lvl < 8 && armedFor >= (lvlSize-1)<<(clkShift*lvl) {
		lvl++
	}
	shift := clkShift * lvl
	return ((expires >> shift) + 1) << shift
}
