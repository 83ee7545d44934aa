package tracer

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/cilium/ebpf"
)

// The listen detector (bpf/listen.bpf.c): what a listener did to a client's
// handshake. Each event is about a listener and one client, seen in softirq
// or timer context, so its pid is the listener's owner.
const (
	SynDrop          EventType = EventType(tcptraceEventTypeEVENT_SYN_DROP)
	SynCookie        EventType = EventType(tcptraceEventTypeEVENT_SYN_COOKIE)
	ListenOverflow   EventType = EventType(tcptraceEventTypeEVENT_LISTEN_OVERFLOW)
	SynackRetransmit EventType = EventType(tcptraceEventTypeEVENT_SYNACK_RETRANSMIT)
)

// The reasons, as bpf/listen.bpf.c judges them (enum listen_reason).
const (
	reasonAcceptQueueFull  Reason = "accept_queue_full"
	reasonSynQueueFull     Reason = "syn_queue_full"
	reasonUnprovenPeer     Reason = "unproven_peer"
	reasonSyncookiesAlways Reason = "syncookies_always"
	reasonNoFinalACK       Reason = "no_final_ack"
)

var listenReasons = map[uint8]Reason{
	uint8(tcptraceListenReasonLISTEN_ACCEPT_QUEUE_FULL): reasonAcceptQueueFull,
	uint8(tcptraceListenReasonLISTEN_SYN_QUEUE_FULL):    reasonSynQueueFull,
	uint8(tcptraceListenReasonLISTEN_UNPROVEN_PEER):     reasonUnprovenPeer,
	uint8(tcptraceListenReasonLISTEN_OTHER):             reasonOther,
	uint8(tcptraceListenReasonLISTEN_SYNCOOKIES_ALWAYS): reasonSyncookiesAlways,
	uint8(tcptraceListenReasonLISTEN_NO_FINAL_ACK):      reasonNoFinalACK,
}

var listenDetector = &detector{
	name: "listen",
	events: []eventSpec{{SynDrop, "syn_drop"}, {SynCookie, "syn_cookie"}, {ListenOverflow, "listen_overflow"},
		{SynackRetransmit, "synack_retransmit"}},
	reasons: []Reason{reasonAcceptQueueFull, reasonSynQueueFull, reasonUnprovenPeer, reasonOther,
		reasonSyncookiesAlways, reasonNoFinalACK},
	probes: []probeSet{
		{
			events:    []EventType{SynDrop, SynCookie},
			addresses: true,
			paths: []pathSpec{
				{path: PathTracepoint, hooks: "tp_btf/consume_skb (6.3+) from tcp_rcv_state_process, per-CPU SNMP counters",
					progs: attach("tp_consume_skb"), requires: needSynDropTracepoint, baselines: true},
				{path: PathFentry, hooks: "fentry+fexit/tcp_conn_request, per-CPU SNMP counters",
					progs: attach("fentry_tcp_conn_request", "fexit_tcp_conn_request"), requires: needCounters},
				{path: PathKprobe, hooks: "kprobe+kretprobe/tcp_conn_request, per-CPU SNMP counters",
					progs: attach("kprobe_tcp_conn_request", "kretprobe_tcp_conn_request"), requires: needCounters},
			},
		},
		{
			events:    []EventType{ListenOverflow},
			addresses: true,
			paths: []pathSpec{
				{path: PathTracepoint, hooks: "tp_btf/kfree_skb: reason TCP_LISTEN_OVERFLOW (6.15+), and drops in cookie_v4_check/cookie_v6_check told by per-CPU SNMP counters",
					progs: attach("tp_kfree_skb"), requires: needListenOverflowTracepoint, baselines: true, enable: hookListenOverflow},
				{path: PathFentry, hooks: "fentry+fexit/tcp_v4_syn_recv_sock, tcp_v6_syn_recv_sock",
					progs: attach("fentry_tcp_v4_syn_recv_sock", "fexit_tcp_v4_syn_recv_sock", "fentry_tcp_v6_syn_recv_sock", "fexit_tcp_v6_syn_recv_sock"), requires: needSynRecvArgs(7)},
				{path: PathFentry, hooks: "fentry+fexit/tcp_v4_syn_recv_sock, tcp_v6_syn_recv_sock (6 arguments)",
					progs: attach("fentry_tcp_v4_syn_recv_sock", "fexit_tcp_v4_syn_recv_sock_6args", "fentry_tcp_v6_syn_recv_sock", "fexit_tcp_v6_syn_recv_sock_6args"), requires: needSynRecvArgs(6)},
				{path: PathKprobe, hooks: "kprobe+kretprobe/tcp_v4_syn_recv_sock, tcp_v6_syn_recv_sock",
					progs: attach("kprobe_tcp_v4_syn_recv_sock", "kretprobe_tcp_v4_syn_recv_sock", "kprobe_tcp_v6_syn_recv_sock", "kretprobe_tcp_v6_syn_recv_sock"), requires: needCounters},
			},
		},
		{
			events: []EventType{SynackRetransmit},
			paths: []pathSpec{
				{path: PathTracepoint, hooks: "tp_btf/tcp_retransmit_synack",
					progs: attach("tp_tcp_retransmit_synack")},
			},
		},
	},
	needs: needs{owners: true, kernelFacts: true},
	// tcp_conn_request() counts LINUX_MIB_LISTENOVERFLOWS for a SYN it drops
	// with the accept queue full, and tcp_v4/v6_syn_recv_sock() for a final
	// ACK that overflows it (a syncookie's too); tcp_syn_flood_action()
	// counts TCPREQQFULLDROP for a SYN dropped with the SYN queue full and
	// syncookies off, TCPREQQFULLDOCOOKIES for every SYN answered with a
	// cookie (tcp_syncookies=2 included). ListenDrops is not checked: the
	// kernel also counts there failures after the handshake that no event
	// reports (no memory for the child, no route).
	counters: []counterCheck{
		{terms: []countTerm{{SynDrop, reasonAcceptQueueFull}, {event: ListenOverflow}}, counter: "ListenOverflows"},
		{terms: []countTerm{{SynDrop, reasonSynQueueFull}}, counter: "TCPReqQFullDrop"},
		{terms: []countTerm{{event: SynCookie}}, counter: "TCPReqQFullDoCookies"},
	},
	decode: decodeListen,
	explain: func(e Event, t tally) string {
		return explainListen(e.Type, e.Reason, &e.listen, e.Remote, t.count)
	},
}

// needListenOverflowTracepoint: the drop reason names the overflows of
// requests in the SYN queue; those of ACKs carrying a syncookie are told by
// the counters, from drops in cookie_v4_check()/cookie_v6_check(), whose
// text must be known when the kernel has them (no cookie path otherwise).
func needListenOverflowTracepoint(f *kernelFacts) error {
	if !f.listenOverflow {
		return errors.New("the kernel has no drop reason SKB_DROP_REASON_TCP_LISTEN_OVERFLOW (added in 6.15)")
	}
	return needCountersAt(f, f.cookie4Start, "cookie_v4_check not found in /proc/kallsyms: overflows of ACKs carrying a syncookie would not be seen")
}

func needSynDropTracepoint(f *kernelFacts) error {
	if !f.consumeLocation {
		return errors.New("skb:consume_skb does not pass its caller's address (added in 6.3)")
	}
	return needCountersAt(f, f.rspStart, "tcp_rcv_state_process not found in /proc/kallsyms")
}

// needSynRecvArgs: fexit reads the return value after the last argument,
// so each argument count has its own program.
func needSynRecvArgs(n uint32) func(*kernelFacts) error {
	return func(f *kernelFacts) error {
		if err := needCounters(f); err != nil {
			return err
		}
		if f.synRecvNargs != n {
			return fmt.Errorf("for kernels whose tcp_v4_syn_recv_sock takes %d arguments (this one: %d)", n, f.synRecvNargs)
		}
		return nil
	}
}

func decodeListen(d *decoder, r *tcptraceEvent, t tally) Event {
	l := newListenState(&r.L)
	e := Event{
		Time:   d.wall(r.TsNs),
		Type:   EventType(r.Type),
		Reason: listenReasons[r.L.Reason],
		NetNS:  r.L.Netns,
		Count:  t.count,
		Path:   ProbePath(r.Path),
		listen: l,
	}
	if l.OwnerKnown {
		e.PID, e.Comm = r.Pid, cString(r.Comm[:])
	} else if d.owners != nil {
		d.ownerByInode(&e, r.L.Ino)
	}
	e.Family, e.Local, e.Remote = addrPair(r.L.Family, r.L.Laddr, r.L.Raddr, r.L.Lport, r.L.Rport)
	e.Details = listenDetails(&l, r)
	// A local client's syn_retransmit line names this drop as its cause.
	d.fates.note(&e)
	return e
}

// listenState is a listener's queues and its namespace's settings at a
// listener event.
type listenState struct {
	Found           bool // the listener was known; the numbers below are real
	AcceptQueue     uint32
	AcceptQueueMax  uint32 // min(listen() backlog, net.core.somaxconn)
	SynQueue        uint32
	MaxSynBacklog   uint32
	Somaxconn       uint32
	Syncookies      uint8
	AbortOnOverflow uint8
	Drops           uint32
	Retransmits     uint32 // synack_retransmit: of this request
	FinalACKDropped bool   // synack_retransmit: the final ACK came, the accept queue was full
	CookieACK       bool   // listen_overflow: the ACK carried a syncookie; no request was kept
	OwnerKnown      bool
}

// cappedBySomaxconn: the kernel keeps only min(backlog, somaxconn), so a
// limit equal to somaxconn means somaxconn capped it (or the application
// asked for exactly that).
func (l *listenState) cappedBySomaxconn() bool {
	return l.AcceptQueueMax == l.Somaxconn
}

func newListenState(r *tcptraceListenSnapshot) listenState {
	return listenState{
		Found:           r.Listening != 0,
		AcceptQueue:     r.AcceptQueue,
		AcceptQueueMax:  r.AcceptQueueMax,
		SynQueue:        r.SynQueue,
		MaxSynBacklog:   r.MaxSynBacklog,
		Somaxconn:       r.Somaxconn,
		Syncookies:      r.Syncookies,
		AbortOnOverflow: r.AbortOnOverflow,
		Drops:           r.Drops,
		Retransmits:     r.Retransmits,
		FinalACKDropped: r.ReqAcked != 0,
		CookieACK:       r.CookieAck != 0,
		OwnerKnown:      r.OwnerKnown != 0,
	}
}

func listenDetails(l *listenState, r *tcptraceEvent) map[string]any {
	// Sized for every key a line can carry: a map that grows while it is
	// filled costs more than the rest of the line.
	d := make(map[string]any, detailsCap)
	d["probe"] = ProbePath(r.Path).String()
	d["listener_found"] = l.Found
	d["owner_known"] = l.OwnerKnown
	if !l.Found {
		return d
	}
	for k, v := range map[string]any{
		"accept_queue":     l.AcceptQueue,
		"accept_queue_max": l.AcceptQueueMax,
		"syn_queue":        l.SynQueue,
		// The SYN queue is full when it holds more than sk_max_ack_backlog
		// requests (inet_csk_reqsk_queue_is_full): the same limit as the
		// accept queue's.
		"syn_queue_max":               l.AcceptQueueMax,
		"tcp_max_syn_backlog":         l.MaxSynBacklog,
		"somaxconn":                   l.Somaxconn,
		"backlog_capped_by_somaxconn": l.cappedBySomaxconn(),
		"tcp_syncookies":              l.Syncookies,
		"tcp_abort_on_overflow":       l.AbortOnOverflow,
		"listener_drops":              l.Drops,
		"listener_inode":              r.L.Ino,
	} {
		d[k] = v
	}
	switch EventType(r.Type) {
	case SynackRetransmit:
		d["synack_retransmits"] = l.Retransmits
		d["final_ack_dropped"] = l.FinalACKDropped
	case ListenOverflow:
		d["syncookie_ack"] = l.CookieACK
	}
	return d
}

// acceptQueueFix names what raises the accept queue's limit, depending on
// what set it.
func (l *listenState) acceptQueueLimit() string {
	if l.cappedBySomaxconn() {
		return "the limit is net.core.somaxconn, which caps the listen() backlog"
	}
	return fmt.Sprintf("the limit is the listen() backlog, not capped by net.core.somaxconn %d", l.Somaxconn)
}

func (l *listenState) acceptQueueFix() string {
	fix := "call accept() sooner or from more threads, raise the listen() backlog"
	if l.cappedBySomaxconn() {
		fix += " and net.core.somaxconn (which caps it)"
	}
	return fix + ", or spread the load over more listeners with SO_REUSEPORT"
}

// explainListen writes the one sentence of a listener event. Every number
// in it is also in the details.
func explainListen(t EventType, r Reason, l *listenState, client netip.AddrPort, count uint64) string {
	var b strings.Builder
	q := func() string {
		return fmt.Sprintf("accept queue %d of %d, %s; SYN queue %d", l.AcceptQueue, l.AcceptQueueMax, l.acceptQueueLimit(), l.SynQueue)
	}
	from := client.String()
	if count > 1 {
		from = fmt.Sprintf("%s and %d more", client, count-1)
	}
	switch t {
	case SynDrop:
		fmt.Fprintf(&b, "SYN from %s dropped", from)
		if !l.Found {
			b.WriteString(" (listener not known to tcptrace, so its queues are not shown)")
		}
		switch {
		case !l.Found:
		case r == reasonAcceptQueueFull:
			fmt.Fprintf(&b, ": the accept queue is full (%s); the client retransmits its SYN and its connect() stalls or times out; %s", q(), l.acceptQueueFix())
		case r == reasonSynQueueFull:
			fmt.Fprintf(&b, ": the SYN queue is full (%d requests waiting for their final ACK, limit %d, the accept queue's; %s) and net.ipv4.tcp_syncookies=%d, so no cookie can stand in: a SYN flood or clients that never complete the handshake; set net.ipv4.tcp_syncookies=1 and raise the listen() backlog", l.SynQueue, l.AcceptQueueMax, q(), l.Syncookies)
		case r == reasonUnprovenPeer:
			fmt.Fprintf(&b, ": with net.ipv4.tcp_syncookies=0 the last quarter of net.ipv4.tcp_max_syn_backlog (%d) is kept for peers this host has talked to before, and %d requests are queued (%s); raise net.ipv4.tcp_max_syn_backlog or set net.ipv4.tcp_syncookies=1", l.MaxSynBacklog, l.SynQueue, q())
		default:
			fmt.Fprintf(&b, " with no queue full (%s): no memory for the request, no route back to the client, or a security module refused it", q())
		}
	case SynCookie:
		fmt.Fprintf(&b, "SYN from %s answered with a syncookie", from)
		if r == reasonSyncookiesAlways {
			b.WriteString(": net.ipv4.tcp_syncookies=2 sends a cookie for every SYN")
		} else if l.Found {
			fmt.Fprintf(&b, ": the SYN queue is full (%s); the connection still succeeds, without TCP options that timestamps cannot carry: a SYN flood or a backlog too small for the connection rate; raise the listen() backlog", q())
			if l.cappedBySomaxconn() {
				b.WriteString(" and net.core.somaxconn")
			}
		}
	case ListenOverflow:
		fmt.Fprintf(&b, "final ACK from %s dropped: the accept queue is full", from)
		if l.Found {
			fmt.Fprintf(&b, " (%s)", q())
		}
		if l.CookieACK {
			// tcp_get_cookie_sock(): no request, so no SYN-ACK timer,
			// and tcp_abort_on_overflow is only read by tcp_check_req().
			b.WriteString("; the ACK carried a syncookie (the SYN queue had overflowed), so the server kept no request: it sends no reset and no SYN-ACK retransmit, and the client, which believes it is connected, retransmits its data until a retransmit finds room in the accept queue or its retries run out")
			if l.Found {
				b.WriteString("; " + l.acceptQueueFix())
			}
			break
		}
		if l.AbortOnOverflow != 0 {
			b.WriteString("; net.ipv4.tcp_abort_on_overflow=1, so the client gets a reset (ECONNRESET on its first read or write)")
		} else {
			b.WriteString("; with net.ipv4.tcp_abort_on_overflow=0 the client believes it is connected: its request is retransmitted, and the server retransmits its SYN-ACK, until the server accept()s or net.ipv4.tcp_synack_retries runs out")
		}
		if l.Found {
			b.WriteString("; " + l.acceptQueueFix())
		}
	case SynackRetransmit:
		if count > 1 {
			fmt.Fprintf(&b, "SYN-ACK to %s retransmitted (retransmit %d of each of these requests)", from, l.Retransmits)
		} else {
			fmt.Fprintf(&b, "SYN-ACK to %s retransmitted (%s to this client's request)", from, plural(int(l.Retransmits), "retransmit"))
		}
		if r == reasonAcceptQueueFull {
			fmt.Fprintf(&b, ": the client's final ACK came but was dropped because the accept queue was full (%s); %s", q(), l.acceptQueueFix())
		} else {
			fmt.Fprintf(&b, ": the client's final ACK has not arrived (lost, filtered, or the client is gone); SYN queue %d", l.SynQueue)
		}
	}
	b.WriteString(".")
	return b.String()
}

// sumPerCPU reads key 0 of a per-CPU array of counters, summed; 0 when the
// map is absent or unreadable.
func sumPerCPU(m *ebpf.Map) uint64 {
	var per []uint64
	if m == nil || m.Lookup(uint32(0), &per) != nil {
		return 0
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n
}

// WriteUnjudgedSYNs reports SYNs whose outcome tcptrace could not tell
// (Tracer.UnjudgedSYNs), when there were any.
func WriteUnjudgedSYNs(w io.Writer, n uint64) {
	if n == 0 {
		return
	}
	fmt.Fprintf(w, "  SYNs not judged: %d: the first SYN a CPU handled in a network namespace has no counter baseline, and the listener's SYN queue at its limit could not tell a cookie or drop from the SYN's own request; syn_drop and syn_cookie may be short by up to this many\n", n)
}
