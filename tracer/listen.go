package tracer

import (
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ListenerState is a listener's queues and its namespace's settings at a
// listener event.
type ListenerState struct {
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
func (l *ListenerState) cappedBySomaxconn() bool {
	return l.AcceptQueueMax == l.Somaxconn
}

func newListenerState(r *tcptraceListenSnapshot) ListenerState {
	return ListenerState{
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

func listenAddrs(r *tcptraceListenSnapshot) (family int, local, remote netip.AddrPort) {
	if r.Family == unix.AF_INET6 {
		return 6, netip.AddrPortFrom(netip.AddrFrom16(r.Laddr).Unmap(), r.Lport),
			netip.AddrPortFrom(netip.AddrFrom16(r.Raddr).Unmap(), r.Rport)
	}
	return 4, netip.AddrPortFrom(netip.AddrFrom4([4]byte(r.Laddr[:4])), r.Lport),
		netip.AddrPortFrom(netip.AddrFrom4([4]byte(r.Raddr[:4])), r.Rport)
}

func listenerDetails(l *ListenerState, r *tcptraceEvent) map[string]any {
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
func (l *ListenerState) acceptQueueLimit() string {
	if l.cappedBySomaxconn() {
		return "the limit is net.core.somaxconn, which caps the listen() backlog"
	}
	return fmt.Sprintf("the limit is the listen() backlog, not capped by net.core.somaxconn %d", l.Somaxconn)
}

func (l *ListenerState) acceptQueueFix() string {
	fix := "call accept() sooner or from more threads, raise the listen() backlog"
	if l.cappedBySomaxconn() {
		fix += " and net.core.somaxconn (which caps it)"
	}
	return fix + ", or spread the load over more listeners with SO_REUSEPORT"
}

// explainListener writes the one sentence of a listener event. Every number
// in it is also in the details.
func explainListener(t EventType, r Reason, l *ListenerState, client netip.AddrPort, count uint64) string {
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
		case r == ReasonAcceptQueueFull:
			fmt.Fprintf(&b, ": the accept queue is full (%s); the client retransmits its SYN and its connect() stalls or times out; %s", q(), l.acceptQueueFix())
		case r == ReasonSynQueueFull:
			fmt.Fprintf(&b, ": the SYN queue is full (%d requests waiting for their final ACK, limit %d, the accept queue's; %s) and net.ipv4.tcp_syncookies=%d, so no cookie can stand in: a SYN flood or clients that never complete the handshake; set net.ipv4.tcp_syncookies=1 and raise the listen() backlog", l.SynQueue, l.AcceptQueueMax, q(), l.Syncookies)
		case r == ReasonUnprovenPeer:
			fmt.Fprintf(&b, ": with net.ipv4.tcp_syncookies=0 the last quarter of net.ipv4.tcp_max_syn_backlog (%d) is kept for peers this host has talked to before, and %d requests are queued (%s); raise net.ipv4.tcp_max_syn_backlog or set net.ipv4.tcp_syncookies=1", l.MaxSynBacklog, l.SynQueue, q())
		default:
			fmt.Fprintf(&b, " with no queue full (%s): no memory for the request, no route back to the client, or a security module refused it", q())
		}
	case SynCookie:
		fmt.Fprintf(&b, "SYN from %s answered with a syncookie", from)
		if r == ReasonSyncookiesAlways {
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
		if r == ReasonAcceptQueueFull {
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
