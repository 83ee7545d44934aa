package tracer

import (
	"strings"
	"testing"
	"time"
)

// A client on this host whose SYN a local listener dropped: its next
// syn_retransmit names the listener's syn_drop, with the queue numbers,
// instead of suspecting the path.
func TestSynRetransmitCauseSynDrop(t *testing.T) {
	d := &decoder{hz: 250, bootWall: time.Unix(0, 0), fates: newSynFates()}
	drop := sampleListenRaw(SynDrop, uint8(tcptraceListenReasonLISTEN_ACCEPT_QUEUE_FULL))
	drop.TsNs = 2e9
	drop.L.Laddr, drop.L.Raddr = [16]byte{10, 0, 0, 2}, [16]byte{10, 0, 0, 1}
	drop.L.Lport, drop.L.Rport = 5432, 40001
	drop.L.AcceptQueue, drop.L.AcceptQueueMax, drop.L.SynQueue = 3, 2, 0
	d.decode(&drop, tally{count: 1})

	r := sampleConnRaw(SynRetransmit) // 10.0.0.1:40001 -> 10.0.0.2:5432
	r.TsNs, r.C.ElapsedNs, r.C.SynRtx, r.C.Seq = 3e9, 2e9, 1, 123456
	e := d.decode(&r, tally{count: 1})
	want := "the listener on 10.0.0.2:5432 on this host dropped this connection's SYN 1.0 s before this retransmit: syn_drop accept_queue_full, accept queue 3 of 2, SYN queue 0"
	if !strings.Contains(e.Explanation, want) || strings.Contains(e.Explanation, "firewall") {
		t.Errorf("explanation lacks %q or still blames the path: %s", want, e.Explanation)
	}
	for k, v := range map[string]any{"refused_by_event": "syn_drop", "refused_by_reason": "accept_queue_full", "refused_by_socket": "10.0.0.2:5432",
		"refused_ms_before": 1000.0, "listener_accept_queue": uint32(3), "listener_accept_queue_max": uint32(2), "isn": uint32(123456)} {
		if e.Details[k] != v {
			t.Errorf("details[%s] = %#v, want %#v", k, e.Details[k], v)
		}
	}
	// A drop before this connect() began was another connection's.
	r.C.ElapsedNs = 5e8
	if e := d.decode(&r, tally{count: 1}); e.Details["refused_by_event"] != nil || !strings.Contains(e.Explanation, "firewall") {
		t.Errorf("a drop from before connect() was taken: %s", e.Explanation)
	}
}

// A SYN rejected by PAWS in TIME_WAIT behind NAT: the refusing socket saw
// another client address and port, the sequence number ties them; the
// paws_reject line itself says what tcp_rfc1337 makes of it.
func TestSynRetransmitCausePawsNAT(t *testing.T) {
	d := &decoder{hz: 250, bootWall: time.Unix(0, 0), fates: newSynFates(), conn: &connFacts{dropReasons: map[uint32]string{38: "TCP_RFC7323_TW_PAWS"}}}
	p := sampleConnRaw(PawsReject) // the server's view: 10.0.0.1:40001 is the server here
	p.TsNs = 2e9
	p.C.Saddr, p.C.Daddr = [16]byte{10, 77, 0, 1}, [16]byte{10, 77, 0, 3}
	p.C.Sport, p.C.Dport = 80, 40000
	p.C.DropReason, p.C.TcpFlags, p.C.State, p.C.Seq = 38, 0x02, 6, 777
	p.C.TsSeen, p.C.Tsval, p.C.TsRecentKnown, p.C.TsRecent = 1, 1000, 1, 1001000
	p.C.Rfc1337, p.C.Rfc1337Known = 1, 1
	pe := d.decode(&p, tally{count: 1})
	if pe.Details["seq"] != uint32(777) || pe.Details["tcp_rfc1337"] != uint8(1) ||
		!strings.Contains(pe.Explanation, "how long the client suffers: net.ipv4.tcp_rfc1337=1 here: the client's reset is ignored and each rejected SYN re-arms the 60 s TIME_WAIT") {
		t.Errorf("paws_reject: %s %v", pe.Explanation, pe.Details)
	}

	r := sampleConnRaw(SynRetransmit)
	r.C.Saddr, r.C.Daddr = [16]byte{10, 77, 0, 2}, [16]byte{10, 77, 0, 1}
	r.C.Sport, r.C.Dport = 5002, 80
	r.TsNs, r.C.ElapsedNs, r.C.SynRtx, r.C.Seq = 2.5e9, 1e9, 1, 777
	e := d.decode(&r, tally{count: 1})
	for _, want := range []string{"a TIME_WAIT socket on this host (10.77.0.1:80, from 10.77.0.3:40000, the client as NAT rewrote it; matched by the SYN's sequence number 777)",
		"rejected this connection's SYN 500 ms before this retransmit: paws_reject timewait_paws, its timestamp 1000000 behind the 1001000 that socket holds",
		"net.ipv4.tcp_rfc1337=1 there"} {
		if !strings.Contains(e.Explanation, want) {
			t.Errorf("explanation lacks %q: %s", want, e.Explanation)
		}
	}
	if e.Details["refused_client_after_nat"] != "10.77.0.3:40000" || e.Details["tcp_rfc1337"] != uint8(1) || e.Details["refused_tsval_behind_by"] != int32(1000000) {
		t.Errorf("details %v", e.Details)
	}
	// Another ISN is another connection.
	r.C.Seq = 778
	if e := d.decode(&r, tally{count: 1}); e.Details["refused_by_event"] != nil {
		t.Errorf("matched another SYN: %s", e.Explanation)
	}
	if got := rfc1337Clause(0, "here"); !strings.Contains(got, "ends the TIME_WAIT, and its next SYN gets through at once") {
		t.Errorf("rfc1337=0: %s", got)
	}
}
