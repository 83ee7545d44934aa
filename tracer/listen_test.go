package tracer

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func sampleListenRaw(t EventType, reason uint8) tcptraceEvent {
	r := tcptraceEvent{TsNs: 1e9, Pid: 777, Type: uint8(t), Path: uint8(PathTracepoint)}
	copy(r.Comm[:], "nginx")
	l := &r.L
	l.Sk, l.Netns, l.Ino, l.Family = 0xffff888000001000, 4026531840, 4242, unix.AF_INET
	copy(l.Laddr[:], []byte{10, 0, 0, 1})
	copy(l.Raddr[:], []byte{10, 0, 0, 9})
	l.Lport, l.Rport = 443, 51000
	l.Reason, l.Listening, l.OwnerKnown = reason, 1, 1
	l.AcceptQueue, l.AcceptQueueMax, l.SynQueue = 129, 128, 3
	l.MaxSynBacklog, l.Somaxconn = 2048, 4096
	l.Syncookies = 1
	return r
}

func TestDecodeListen(t *testing.T) {
	r := sampleListenRaw(SynDrop, uint8(tcptraceListenReasonLISTEN_ACCEPT_QUEUE_FULL))
	e := (&decoder{hz: 1000, bootWall: time.Unix(0, 0)}).decode(&r, tally{count: 3})
	if e.Type != SynDrop || e.Reason != reasonAcceptQueueFull || e.PID != 777 || e.Comm != "nginx" || e.Count != 3 {
		t.Errorf("event: %+v", e)
	}
	if e.Local != netip.MustParseAddrPort("10.0.0.1:443") || e.Remote != netip.MustParseAddrPort("10.0.0.9:51000") {
		t.Errorf("addresses %v -> %v", e.Local, e.Remote)
	}
	for k, v := range map[string]any{"accept_queue": uint32(129), "accept_queue_max": uint32(128), "syn_queue": uint32(3), "syn_queue_max": uint32(128),
		"somaxconn": uint32(4096), "backlog_capped_by_somaxconn": false, "tcp_syncookies": uint8(1), "probe": "tracepoint"} {
		if e.Details[k] != v {
			t.Errorf("details[%s] = %#v, want %#v", k, e.Details[k], v)
		}
	}
	for _, want := range []string{"SYN from 10.0.0.9:51000 and 2 more dropped", "accept queue 129 of 128", "the listen() backlog", "SO_REUSEPORT"} {
		if !strings.Contains(e.Explanation, want) {
			t.Errorf("explanation lacks %q: %s", want, e.Explanation)
		}
	}
}

func TestExplainListen(t *testing.T) {
	base := listenState{Found: true, AcceptQueue: 4097, AcceptQueueMax: 4096, Somaxconn: 4096, SynQueue: 10, MaxSynBacklog: 8}
	client := netip.MustParseAddrPort("192.0.2.1:40000")
	abort := base
	abort.AbortOnOverflow = 1
	noCookies := base
	noCookies.Syncookies = 0
	rtx := base
	rtx.Retransmits = 2
	cookieACK := base
	cookieACK.CookieACK = true
	cookieACKAbort := abort
	cookieACKAbort.CookieACK = true
	tests := []struct {
		name  string
		typ   EventType
		r     Reason
		l     listenState
		count uint64
		want  []string
		not   []string
	}{
		{"capped by somaxconn", SynDrop, reasonAcceptQueueFull, base, 1, []string{"net.core.somaxconn, which caps the listen() backlog", "and net.core.somaxconn (which caps it)"}, nil},
		{"overflow, client thinks it is connected", ListenOverflow, reasonAcceptQueueFull, base, 1, []string{"final ACK from 192.0.2.1:40000 dropped", "tcp_abort_on_overflow=0 the client believes it is connected"}, nil},
		{"overflow with abort", ListenOverflow, reasonAcceptQueueFull, abort, 1, []string{"tcp_abort_on_overflow=1", "gets a reset"}, nil},
		{"syn queue full", SynDrop, reasonSynQueueFull, noCookies, 1, []string{"SYN queue is full (10 requests waiting for their final ACK, limit 4096", "tcp_syncookies=0", "set net.ipv4.tcp_syncookies=1"}, nil},
		{"unproven peer", SynDrop, reasonUnprovenPeer, noCookies, 1, []string{"last quarter of net.ipv4.tcp_max_syn_backlog (8)", "10 requests are queued"}, nil},
		{"cookie", SynCookie, reasonSynQueueFull, base, 1, []string{"answered with a syncookie", "SYN queue is full"}, nil},
		{"cookies always", SynCookie, reasonSyncookiesAlways, base, 1, []string{"tcp_syncookies=2"}, nil},
		{"synack, ACK missing", SynackRetransmit, reasonNoFinalACK, rtx, 1, []string{"2 retransmits", "has not arrived"}, nil},
		{"synack, ACK dropped", SynackRetransmit, reasonAcceptQueueFull, rtx, 1, []string{"came but was dropped because the accept queue was full"}, nil},
		{"listener unknown", SynDrop, reasonOther, listenState{}, 1, []string{"listener not known to tcptrace"}, nil},
		// A cookie ACK has no request: no SYN-ACK retransmit, and
		// tcp_abort_on_overflow (read by tcp_check_req() only) sends no reset.
		{"overflow of a cookie ACK", ListenOverflow, reasonAcceptQueueFull, cookieACK, 1,
			[]string{"carried a syncookie", "no SYN-ACK retransmit", "accept queue 4097 of 4096"}, []string{"server retransmits its SYN-ACK"}},
		{"overflow of a cookie ACK, abort set", ListenOverflow, reasonAcceptQueueFull, cookieACKAbort, 1,
			[]string{"sends no reset"}, []string{"gets a reset"}},
		{"synack, a round of several requests", SynackRetransmit, reasonNoFinalACK, rtx, 4,
			[]string{"192.0.2.1:40000 and 3 more", "retransmit 2 of each of these requests"}, []string{"this client's request"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := explainListen(tt.typ, tt.r, &tt.l, client, tt.count)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("lacks %q:\n%s", w, got)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(got, w) {
					t.Errorf("says %q:\n%s", w, got)
				}
			}
			if !strings.HasSuffix(got, ".") {
				t.Errorf("not a sentence: %q", got)
			}
		})
	}
}

func TestListenDetailsWithoutListener(t *testing.T) {
	r := sampleListenRaw(SynDrop, uint8(tcptraceListenReasonLISTEN_OTHER))
	r.L.Listening = 0
	d := listenDetails(&listenState{}, &r)
	if _, ok := d["accept_queue"]; ok || d["listener_found"] != false {
		t.Errorf("numbers reported for an unknown listener: %v", d)
	}
}
