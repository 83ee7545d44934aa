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

func TestDecodeListenerEvent(t *testing.T) {
	r := sampleListenRaw(SynDrop, uint8(tcptraceListenReasonLISTEN_ACCEPT_QUEUE_FULL))
	e := (&decoder{hz: 1000, bootWall: time.Unix(0, 0)}).decode(&r, tally{count: 3})
	if e.Type != SynDrop || e.Reason != ReasonAcceptQueueFull || e.PID != 777 || e.Comm != "nginx" || e.Count != 3 {
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

func TestExplainListener(t *testing.T) {
	base := ListenerState{Found: true, AcceptQueue: 4097, AcceptQueueMax: 4096, Somaxconn: 4096, SynQueue: 10, MaxSynBacklog: 8}
	client := netip.MustParseAddrPort("192.0.2.1:40000")
	abort := base
	abort.AbortOnOverflow = 1
	noCookies := base
	noCookies.Syncookies = 0
	rtx := base
	rtx.Retransmits = 2
	tests := []struct {
		name string
		typ  EventType
		r    Reason
		l    ListenerState
		want []string
	}{
		{"capped by somaxconn", SynDrop, ReasonAcceptQueueFull, base, []string{"net.core.somaxconn, which caps the listen() backlog", "and net.core.somaxconn (which caps it)"}},
		{"overflow, client thinks it is connected", ListenOverflow, ReasonAcceptQueueFull, base, []string{"final ACK from 192.0.2.1:40000 dropped", "tcp_abort_on_overflow=0 the client believes it is connected"}},
		{"overflow with abort", ListenOverflow, ReasonAcceptQueueFull, abort, []string{"tcp_abort_on_overflow=1", "gets a reset"}},
		{"syn queue full", SynDrop, ReasonSynQueueFull, noCookies, []string{"SYN queue is full (10 requests waiting for their final ACK, limit 4096", "tcp_syncookies=0", "set net.ipv4.tcp_syncookies=1"}},
		{"unproven peer", SynDrop, ReasonUnprovenPeer, noCookies, []string{"last quarter of net.ipv4.tcp_max_syn_backlog (8)", "10 requests are queued"}},
		{"cookie", SynCookie, ReasonSynQueueFull, base, []string{"answered with a syncookie", "SYN queue is full"}},
		{"cookies always", SynCookie, ReasonSyncookiesAlways, base, []string{"tcp_syncookies=2"}},
		{"synack, ACK missing", SynackRetransmit, ReasonNoFinalACK, rtx, []string{"2 retransmits", "has not arrived"}},
		{"synack, ACK dropped", SynackRetransmit, ReasonAcceptQueueFull, rtx, []string{"came but was dropped because the accept queue was full"}},
		{"listener unknown", SynDrop, ReasonOther, ListenerState{}, []string{"listener not known to tcptrace"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := explainListener(tt.typ, tt.r, &tt.l, client, 1)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("lacks %q:\n%s", w, got)
				}
			}
			if !strings.HasSuffix(got, ".") {
				t.Errorf("not a sentence: %q", got)
			}
		})
	}
}

func TestListenerDetailsWithoutListener(t *testing.T) {
	r := sampleListenRaw(SynDrop, uint8(tcptraceListenReasonLISTEN_OTHER))
	r.L.Listening = 0
	d := listenerDetails(&ListenerState{}, &r)
	if _, ok := d["accept_queue"]; ok || d["listener_found"] != false {
		t.Errorf("numbers reported for an unknown listener: %v", d)
	}
}

func TestEventNamesRoundTrip(t *testing.T) {
	for _, e := range AllEventTypes() {
		got, err := ParseEventType(e.String())
		if err != nil || got != e {
			t.Errorf("%s: %v %v", e, got, err)
		}
	}
}
