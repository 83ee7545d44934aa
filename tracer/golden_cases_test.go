package tracer

import (
	"time"

	"golang.org/x/sys/unix"
)

// goldenBoot is the wall time of monotonic zero: fixed and in UTC, so that
// the text lines' times do not depend on the host's zone.
var goldenBoot = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// goldenConnFacts names a few drop and reset reasons as a kernel's BTF
// would (the values differ between kernels; these are arbitrary).
func goldenConnFacts() *connFacts {
	return &connFacts{
		dropReasons: map[uint32]string{70: "TCP_RFC7323_PAWS", 71: "TCP_RFC7323_TW_PAWS", 72: "TCP_RFC7323_PAWS_ACK", 73: "TCP_RFC7323_TSECR"},
		rstReasons:  map[uint32]string{3: "TCP_INVALID_ACK_SEQUENCE", 5: "TCP_ABORT_ON_CLOSE"},
	}
}

type goldenCase struct {
	name string
	raw  tcptraceEvent
	t    tally
	noHZ bool // the kernel's HZ unknown
	// before: records decoded first by the same decoder (a refusal a
	// syn_retransmit line names as its cause).
	before []tcptraceEvent
}

// goldenSend is a sender whose buffer is full, unacknowledged data
// retransmitted by the RTO (unacked_retransmitting).
func goldenSend(typ EventType) tcptraceEvent {
	r := tcptraceEvent{TsNs: 5e9, Count: 1, Pid: 4242, Tid: 4243, Type: uint8(typ), Path: uint8(PathTracepoint), Ret: -11}
	copy(r.Comm[:], "proxy")
	s := &r.S
	s.Sk, s.Family, s.State = 0xffff888012345678, unix.AF_INET, 1
	copy(s.Saddr[:], []byte{10, 0, 0, 1})
	copy(s.Daddr[:], []byte{10, 0, 0, 2})
	s.Sport, s.Dport, s.Netns, s.Ino = 41000, 8080, 4026531840, 99
	s.Sndbuf, s.WmemQueued = 46080, 46592
	s.WriteSeq, s.SndNxt, s.SndUna = 3000, 2000, 500
	s.SndWnd, s.SndCwnd, s.MssCache = 65535, 1, 1448
	s.PacketsOut, s.RetransOut, s.LostOut = 2, 1, 2
	s.SrttUs = 8 * 1500
	s.NowJiffies = 1<<32 + 1000
	s.RcvTstamp = 1<<32 - 4000
	s.Rto, s.TimerExpires, s.Pending = 3200, 1<<32+1000+12800, 1
	s.Retransmits, s.Backoff = 4, 4
	s.Nonagle = 1
	s.MemAllocated = 1234
	return r
}

func goldenListen(typ EventType, reason tcptraceListenReason) tcptraceEvent {
	r := tcptraceEvent{TsNs: 2e9, Count: 1, Pid: 777, Type: uint8(typ), Path: uint8(PathTracepoint)}
	copy(r.Comm[:], "nginx")
	l := &r.L
	l.Sk, l.Netns, l.Ino, l.Family = 0xffff888000001000, 4026531840, 4242, unix.AF_INET
	copy(l.Laddr[:], []byte{10, 0, 0, 2})
	copy(l.Raddr[:], []byte{10, 0, 0, 1})
	l.Lport, l.Rport = 5432, 40001
	l.Reason, l.Listening, l.OwnerKnown = uint8(reason), 1, 1
	l.AcceptQueue, l.AcceptQueueMax, l.SynQueue = 129, 128, 3
	l.MaxSynBacklog, l.Somaxconn = 2048, 4096
	l.Syncookies, l.Drops = 1, 17
	return r
}

func goldenACK(typ EventType) tcptraceEvent {
	r := goldenSend(typ)
	r.Ret = 0
	r.S.SrttUs = 50 << 3
	r.S.Nonagle = 0
	r.S.WriteSeq, r.S.SndNxt = 5200, 5000
	r.A = tcptraceAckSnapshot{
		HeldNs: uint64(43 * time.Millisecond), Ato: 10, Pingpong: 1, InPingpong: 1,
		UnackedBytes: 64, RcvMss: 536, HeldBytes: 200, SmallInflight: 64,
		PeerPid: 777, PeerAto: 10, PeerHeldNs: uint64(42 * time.Millisecond), PeerInPingpong: 1,
		PeerOwnerKnown: 1, OwnerKnown: 1,
	}
	copy(r.A.PeerComm[:], "client")
	return r
}

func goldenConn(typ EventType) tcptraceEvent {
	r := tcptraceEvent{TsNs: 3e9, Count: 1, Pid: 4242, Tid: 4243, Type: uint8(typ), Path: uint8(PathTracepoint)}
	copy(r.Comm[:], "proxy")
	c := &r.C
	c.Sk, c.Netns, c.Ino, c.Family = 0xffff888000002000, 4026531840, 99, unix.AF_INET
	copy(c.Saddr[:], []byte{10, 0, 0, 1})
	copy(c.Daddr[:], []byte{10, 0, 0, 2})
	c.Sport, c.Dport = 40001, 5432
	c.OwnerKnown, c.StartKnown = 1, 1
	c.State = 2
	c.ElapsedNs = uint64(3 * time.Second)
	c.LimitsKnown = uint8(tcptraceConnLimitsLIMIT_SYN | tcptraceConnLimitsLIMIT_SYN_LINEAR)
	c.SynRetries, c.SynLinearTimeouts = 6, 4
	c.Seq = 123456789
	return r
}

// goldenPaws is a TIME_WAIT socket refusing a SYN whose timestamp is behind.
func goldenPaws(dropReason uint32) tcptraceEvent {
	r := goldenConn(PawsReject)
	r.TsNs = 2.5e9
	c := &r.C
	copy(c.Saddr[:], []byte{10, 0, 0, 2})
	copy(c.Daddr[:], []byte{10, 0, 0, 1})
	c.Sport, c.Dport = 5432, 40001
	c.OwnerKnown, c.StartKnown, c.LimitsKnown = 0, 0, 0
	c.Ino = 0
	c.State = 6
	c.DropReason = dropReason
	c.TcpFlags = 0x02
	c.TsSeen, c.Tsval, c.Tsecr = 1, 1000, 0
	c.TsRecentKnown, c.TsRecent = 1, 5000
	c.Rfc1337Known, c.Rfc1337 = 1, 1
	return r
}

func goldenCases() []goldenCase {
	var cs []goldenCase
	add := func(name string, r tcptraceEvent, t tally) *goldenCase {
		if t.count == 0 {
			t.count = 1
		}
		cs = append(cs, goldenCase{name: name, raw: r, t: t})
		return &cs[len(cs)-1]
	}

	// send: send_eagain and send_blocked, every reason.
	add("send_eagain_unacked_retransmitting", goldenSend(SendEAGAIN), tally{})
	r := goldenSend(SendEAGAIN)
	r.S.SndWnd, r.S.ProbesOut = 0, 3
	add("send_eagain_peer_zero_window", r, tally{count: 40})
	r = goldenSend(SendEAGAIN)
	r.S.Retransmits, r.S.SndWnd, r.S.RcvTstamp = 0, 2000, 995
	add("send_eagain_peer_window_full", r, tally{})
	r = goldenSend(SendEAGAIN)
	r.S.Retransmits, r.S.TotalRetrans = 0, 7
	add("send_eagain_cwnd_limited", r, tally{})
	r = goldenSend(SendEAGAIN)
	r.S.Retransmits, r.S.SndCwnd, r.S.Userlocks = 0, 10, 1
	r.S.Nonagle = 2
	add("send_eagain_sndbuf_limited", r, tally{})
	r = goldenSend(SendEAGAIN)
	r.S.MemPressure, r.S.MemAllocated = 1, 90000
	add("send_eagain_memory_pressure", r, tally{})
	r = goldenSend(SendEAGAIN)
	r.S.WmemQueued, r.S.NotsentLowat = 10000, 500
	add("send_eagain_notsent_lowat", r, tally{})
	r = goldenSend(SendEAGAIN)
	r.S.Retransmits, r.S.SndCwnd, r.S.PacketsOut, r.S.RetransOut, r.S.LostOut = 0, 10, 0, 0, 0
	add("send_eagain_unknown_local_transmit", r, tally{})
	r = goldenSend(SendEAGAIN)
	r.S.Retransmits, r.S.SndCwnd, r.S.SndWnd = 0, 10, 2000
	add("send_eagain_unknown_window_full_no_ack", r, tally{})
	r = goldenSend(SendEAGAIN)
	r.S.Retransmits, r.S.SndCwnd = 0, 10
	add("send_eagain_unknown", r, tally{})
	c := add("send_eagain_hz_unknown", goldenSend(SendEAGAIN), tally{})
	c.noHZ = true
	r = goldenSend(SendEAGAIN)
	r.S.Family = unix.AF_INET6
	copy(r.S.Saddr[:], []byte{0x20, 0x01, 0x0d, 0xb8, 15: 1})
	copy(r.S.Daddr[:], []byte{0x20, 0x01, 0x0d, 0xb8, 15: 2})
	copy(r.Comm[:], "bad\x1b[31m\n\\\xff")
	add("send_eagain_ipv6_odd_comm", r, tally{})
	add("send_blocked", goldenSend(SendBlocked), tally{wait: 250 * time.Millisecond, maxWait: 250 * time.Millisecond})
	add("send_blocked_aggregated", goldenSend(SendBlocked), tally{count: 5, wait: 1200 * time.Millisecond, maxWait: 400 * time.Millisecond})
	add("send_blocked_in_progress", goldenSend(SendBlocked), tally{wait: 3 * time.Second, maxWait: 3 * time.Second, inProgress: true})

	// listen: syn_drop, syn_cookie, listen_overflow, synack_retransmit.
	add("syn_drop_accept_queue_full", goldenListen(SynDrop, tcptraceListenReasonLISTEN_ACCEPT_QUEUE_FULL), tally{count: 3})
	r = goldenListen(SynDrop, tcptraceListenReasonLISTEN_SYN_QUEUE_FULL)
	r.L.Syncookies, r.L.AcceptQueue, r.L.SynQueue = 0, 2, 129
	add("syn_drop_syn_queue_full", r, tally{})
	r = goldenListen(SynDrop, tcptraceListenReasonLISTEN_UNPROVEN_PEER)
	r.L.Syncookies, r.L.AcceptQueue, r.L.SynQueue = 0, 2, 1600
	add("syn_drop_unproven_peer", r, tally{})
	r = goldenListen(SynDrop, tcptraceListenReasonLISTEN_OTHER)
	r.L.AcceptQueue = 2
	add("syn_drop_other", r, tally{})
	r = goldenListen(SynDrop, tcptraceListenReasonLISTEN_OTHER)
	r.L.Listening, r.L.OwnerKnown = 0, 0
	add("syn_drop_listener_unknown", r, tally{})
	r = goldenListen(SynCookie, tcptraceListenReasonLISTEN_SYN_QUEUE_FULL)
	r.L.AcceptQueueMax, r.L.Somaxconn = 4096, 4096
	add("syn_cookie_syn_queue_full", r, tally{count: 9})
	r = goldenListen(SynCookie, tcptraceListenReasonLISTEN_SYNCOOKIES_ALWAYS)
	r.L.Syncookies = 2
	add("syn_cookie_always", r, tally{})
	add("listen_overflow", goldenListen(ListenOverflow, tcptraceListenReasonLISTEN_ACCEPT_QUEUE_FULL), tally{})
	r = goldenListen(ListenOverflow, tcptraceListenReasonLISTEN_ACCEPT_QUEUE_FULL)
	r.L.AbortOnOverflow = 1
	add("listen_overflow_abort", r, tally{count: 2})
	r = goldenListen(ListenOverflow, tcptraceListenReasonLISTEN_ACCEPT_QUEUE_FULL)
	r.L.CookieAck = 1
	add("listen_overflow_cookie_ack", r, tally{})
	r = goldenListen(SynackRetransmit, tcptraceListenReasonLISTEN_NO_FINAL_ACK)
	r.L.Retransmits = 2
	add("synack_retransmit_no_final_ack", r, tally{})
	r = goldenListen(SynackRetransmit, tcptraceListenReasonLISTEN_ACCEPT_QUEUE_FULL)
	r.L.Retransmits, r.L.ReqAcked = 1, 1
	add("synack_retransmit_accept_queue_full", r, tally{count: 4})

	// delack: delayed_ack.
	add("delayed_ack_pingpong", goldenACK(DelayedACK), tally{wait: 43 * time.Millisecond, maxWait: 43 * time.Millisecond})
	r = goldenACK(DelayedACK)
	r.A.InPingpong, r.A.Pingpong, r.A.Quick = 0, 0, 0
	add("delayed_ack_quickack_exhausted", r, tally{wait: 40 * time.Millisecond, maxWait: 40 * time.Millisecond})
	r = goldenACK(DelayedACK)
	r.A.InPingpong, r.A.Quick = 0, 2
	r.A.HeldNs = 0
	add("delayed_ack_other_held_unknown", r, tally{})
	add("delayed_ack_aggregated", goldenACK(DelayedACK), tally{count: 12, wait: 500 * time.Millisecond, maxWait: 44 * time.Millisecond})
	r = goldenACK(DelayedACK)
	r.A.OwnerKnown = 0
	add("delayed_ack_owner_unknown", r, tally{wait: 41 * time.Millisecond, maxWait: 41 * time.Millisecond})

	// nagle: nagle_stall, nagle_delack_stall.
	add("nagle_stall_pure_ack", goldenACK(NagleStall), tally{wait: 43 * time.Millisecond, maxWait: 43 * time.Millisecond})
	r = goldenACK(NagleStall)
	r.A.AckPayload = 100
	add("nagle_stall_reply", r, tally{count: 3, wait: 3 * time.Millisecond, maxWait: 2 * time.Millisecond})
	add("nagle_delack_stall", goldenACK(NagleDelackStall), tally{wait: 44 * time.Millisecond, maxWait: 44 * time.Millisecond})
	r = goldenACK(NagleDelackStall)
	r.A.PeerOwnerKnown, r.A.PeerHeldNs, r.A.PeerInPingpong = 0, 0, 0
	add("nagle_delack_stall_peer_unknown", r, tally{wait: 44 * time.Millisecond, maxWait: 44 * time.Millisecond})

	// connect: syn_retransmit, connect_timeout, connect_refused.
	r = goldenConn(SynRetransmit)
	r.C.SynRtx = 3
	add("syn_retransmit", r, tally{})
	r = goldenConn(SynRetransmit)
	r.C.SynRtx, r.C.Syncnt, r.C.UserTimeoutMs = 1, 2, 5000
	r.Ret, r.Count = -1, 3
	add("syn_retransmit_transmit_error", r, tally{})
	r = goldenConn(SynRetransmit)
	r.C.SynRtx = 4
	add("syn_retransmit_aggregated", r, tally{count: 5, attemptLo: 2, attemptHi: 4})
	r = goldenConn(SynRetransmit)
	r.C.StartKnown, r.C.Retransmits, r.C.LimitsKnown = 0, 2, 0
	add("syn_retransmit_start_unknown", r, tally{})
	r = goldenConn(SynRetransmit)
	r.C.SynRtx = 2
	c = add("syn_retransmit_cause_syn_drop", r, tally{})
	c.before = []tcptraceEvent{goldenListen(SynDrop, tcptraceListenReasonLISTEN_ACCEPT_QUEUE_FULL)}
	r = goldenConn(SynRetransmit)
	r.C.SynRtx = 2
	c = add("syn_retransmit_cause_paws_nat", r, tally{})
	p := goldenPaws(71)
	copy(p.C.Daddr[:], []byte{192, 168, 1, 7})
	p.C.Dport = 61000
	c.before = []tcptraceEvent{p}
	r = goldenConn(ConnectTimeout)
	r.Ret, r.C.SynRtx, r.C.State = -int32(unix.ETIMEDOUT), 10, 7
	r.C.ElapsedNs = uint64(131 * time.Second)
	add("connect_timeout", r, tally{})
	r = goldenConn(ConnectRefused)
	r.Ret, r.C.SynRtx, r.C.State = -int32(unix.ECONNREFUSED), 1, 7
	add("connect_refused", r, tally{})

	// ports: port_exhaustion. The pid is above PID_MAX_LIMIT, so no
	// /proc/<pid>/net/tcp is read.
	r = goldenConn(PortExhaustion)
	r.Pid, r.Ret, r.C.State = 4194305, -int32(unix.EADDRNOTAVAIL), 7
	r.C.Dport = 0
	r.C.LimitsKnown = uint8(tcptraceConnLimitsLIMIT_PORTS | tcptraceConnLimitsLIMIT_TW)
	r.C.PortLo, r.C.PortHi, r.C.TwReuse, r.C.TwCount, r.C.MaxTwBuckets = 32768, 60999, 2, 28000, 262144
	add("port_exhaustion", r, tally{count: 7})
	r = goldenConn(PortExhaustion)
	r.Pid, r.Ret, r.C.State, r.C.LimitsKnown = 0, -int32(unix.EADDRNOTAVAIL), 7, 0
	r.C.OwnerKnown = 0
	add("port_exhaustion_nothing_known", r, tally{})

	// timewait: timewait_overflow.
	r = goldenConn(TimewaitOverflow)
	r.C.State, r.C.LimitsKnown, r.C.TwCount, r.C.MaxTwBuckets = 7, uint8(tcptraceConnLimitsLIMIT_TW), 8, 8
	add("timewait_overflow", r, tally{})
	r = goldenConn(TimewaitOverflow)
	r.C.State, r.C.LimitsKnown = 7, 0
	add("timewait_overflow_limit_unknown", r, tally{count: 3})

	// paws: paws_reject, every reason.
	add("paws_reject_timewait", goldenPaws(71), tally{})
	r = goldenPaws(pawsRecomputed)
	r.C.Rfc1337 = 0
	r.Path = uint8(PathFentry)
	add("paws_reject_timewait_recomputed", r, tally{})
	r = goldenPaws(70)
	r.C.TcpFlags, r.C.State, r.C.Rfc1337Known = 0x10, 1, 0
	add("paws_reject_established", r, tally{count: 6})
	r = goldenPaws(72)
	r.C.TcpFlags, r.C.State = 0x10, 1
	add("paws_reject_old_ack", r, tally{})
	r = goldenPaws(73)
	r.C.TcpFlags, r.C.State, r.C.TsRecentKnown = 0x10, 3, 0
	add("paws_reject_bad_tsecr", r, tally{})
	r = goldenPaws(99)
	r.C.TsSeen = 0
	add("paws_reject_unknown_reason", r, tally{})

	// reset: sent and received.
	r = goldenConn(Reset)
	r.C.Side, r.C.State, r.C.RstReasonKnown, r.C.RstReason = 1, 7, 1, 5
	add("reset_sent_abort", r, tally{})
	r = goldenConn(Reset)
	r.C.Side, r.C.State, r.C.Unread, r.C.Unacked = 1, 1, 512, 10
	add("reset_sent_unread", r, tally{count: 4})
	r = goldenConn(Reset)
	r.C.Side, r.C.State, r.C.Unread, r.C.Unacked = 2, 1, 0, 3000
	r.C.OwnerKnown, r.C.Ino = 0, 0
	add("reset_received", r, tally{count: 3})
	r = goldenConn(Reset)
	r.C.Side, r.C.State, r.C.Unacked = 2, 1, 3000
	add("reset_received_one", r, tally{})

	// retransmit: each kind, a give-up by TCP_USER_TIMEOUT, a kernel with
	// TCP_RTO_MAX_MS, HZ unknown, a transmit refused on this host.
	rtx := func(kind tcptraceRtxKind) tcptraceEvent {
		r := goldenSend(Retransmit)
		r.Ret = 0
		r.C.OwnerKnown = 1
		r.X = tcptraceRtxSnapshot{Segs: 1, Bytes: 1448, Ssthresh: 7, RttvarUs: 4 * 750, Retries2: 15, Kind: uint8(kind)}
		return r
	}
	add("retransmit_timeout", rtx(tcptraceRtxKindRTX_TIMEOUT), tally{wait: 1448})
	r = rtx(tcptraceRtxKindRTX_TIMEOUT)
	r.C.UserTimeoutMs, r.C.RtoMax = 30000, 5000
	r.S.RtoMaxKnobs = uint8(tcptraceRtoMaxKnobRTO_MAX_SOCKOPT | tcptraceRtoMaxKnobRTO_MAX_SYSCTL)
	r.X.RtoMaxSysctlMs = 120000
	add("retransmit_timeout_user_timeout", r, tally{count: 3, wait: 3 * 1448})
	r = rtx(tcptraceRtxKindRTX_TIMEOUT)
	r.C.OwnerKnown, r.S.Ino = 0, 0
	cs = append(cs, goldenCase{name: "retransmit_timeout_no_hz", raw: r, t: tally{count: 1, wait: 1448}, noHZ: true})
	r = rtx(tcptraceRtxKindRTX_TIMEOUT)
	r.S.RcvTstamp = uint32(r.S.NowJiffies) - 50 // a duplicate ACK 50 ms ago
	add("retransmit_timeout_peer_heard", r, tally{wait: 1448})
	add("retransmit_loss_probe", rtx(tcptraceRtxKindRTX_LOSS_PROBE), tally{wait: 1448})
	r = rtx(tcptraceRtxKindRTX_FAST)
	r.S.Retransmits, r.S.Backoff, r.S.CaState, r.S.SackedOut = 0, 0, 3, 5
	add("retransmit_fast", r, tally{count: 6, wait: 6 * 1448})
	r = rtx(tcptraceRtxKindRTX_SLOW_START)
	r.S.CaState, r.X.Ssthresh = 4, 0x7fffffff
	add("retransmit_slow_start", r, tally{count: 2, wait: 2 * 1448})
	r = rtx(tcptraceRtxKindRTX_OTHER)
	r.X.Err = -1
	add("retransmit_other_eperm", r, tally{wait: 1448})

	// rto_stall: first seen, aggregated on a kernel with TCP_RTO_MAX_MS
	// and TCP_USER_TIMEOUT set, an episode tcptrace did not see begin,
	// HZ unknown, and the recovery.
	stall := func(kind tcptraceRtoStallKind) tcptraceEvent {
		r := rtx(0)
		r.Type = uint8(RTOStall)
		r.S.Retransmits, r.S.Backoff, r.S.Rto, r.S.CaState = 6, 6, 12800, 4
		r.S.TimerExpires = r.S.NowJiffies + 3800
		r.X.Kind, r.X.EpisodeKnown = uint8(kind), 1
		r.X.SinceFirstRtoNs, r.X.SinceLastRtoNs, r.X.SinceHeardNs = 9_200e6, 9_000e6, 0
		return r
	}
	add("rto_stall_backoff", stall(tcptraceRtoStallKindRTO_STALL_WAITING), tally{})
	r = stall(tcptraceRtoStallKindRTO_STALL_WAITING)
	r.C.UserTimeoutMs, r.C.RtoMax = 60000, 20000
	r.S.RtoMaxKnobs = uint8(tcptraceRtoMaxKnobRTO_MAX_SOCKOPT | tcptraceRtoMaxKnobRTO_MAX_SYSCTL)
	r.X.RtoMaxSysctlMs = 30000
	r.X.SinceHeardNs = 1_500e6
	add("rto_stall_backoff_aggregated", r, tally{count: 40})
	r = stall(tcptraceRtoStallKindRTO_STALL_WAITING)
	r.X.EpisodeKnown, r.X.SinceFirstRtoNs = 0, 0
	r.S.Pending = 0
	add("rto_stall_episode_unknown", r, tally{})
	cs = append(cs, goldenCase{name: "rto_stall_backoff_no_hz", raw: stall(tcptraceRtoStallKindRTO_STALL_WAITING), t: tally{count: 1}, noHZ: true})
	r = stall(tcptraceRtoStallKindRTO_STALL_RECOVERED)
	r.X.SinceFirstRtoNs, r.X.SinceLastRtoNs, r.X.SinceHeardNs = 13_000e6, 12_800e6, 3_800e6
	add("rto_stall_recovered", r, tally{})
	return cs
}

// goldenDecode decodes a case as Tracer.Run and the aggregator do.
