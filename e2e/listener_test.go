package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var listenerEvents = []string{"-e", "syn_drop,syn_cookie,listen_overflow,synack_retransmit", "--interval", "500ms"}

// counterDelta is how much each TcpExt counter moved.
func counterDelta(before, after map[string]uint64, names ...string) map[string]uint64 {
	d := map[string]uint64{}
	for _, n := range names {
		d[n] = after[n] - before[n]
	}
	return d
}

// countBy sums the counts of one event, per reason.
func countBy(evs []event) map[string]uint64 {
	m := map[string]uint64{}
	for _, e := range evs {
		m[e.Reason] += e.Count
	}
	return m
}

// checkListenCounters: what tcptrace counted against the namespace's own
// counters. ListenOverflows counts SYNs dropped for a full accept queue and
// third-ACK overflows; ListenDrops counts every drop of either kind.
func checkListenCounters(t *testing.T, tr *tracerRun, pid int, delta map[string]uint64) {
	t.Helper()
	drops := countBy(tr.eventsFor("syn_drop", pid))
	overflows := sumCounts(tr.eventsFor("listen_overflow", pid))
	var allDrops uint64
	for _, n := range drops {
		allDrops += n
	}
	skipped := tr.skippedRuns()
	if got := drops["accept_queue_full"] + overflows; !countAgrees(t, "ListenOverflows", got, delta["ListenOverflows"], skipped) {
		t.Errorf("ListenOverflows moved by %d; tcptrace: %d syn_drop[accept_queue_full] + %d listen_overflow = %d",
			delta["ListenOverflows"], drops["accept_queue_full"], overflows, got)
	}
	if got := allDrops + overflows; !countAgrees(t, "ListenDrops", got, delta["ListenDrops"], skipped) {
		t.Errorf("ListenDrops moved by %d; tcptrace: %d syn_drop + %d listen_overflow = %d (%v)",
			delta["ListenDrops"], allDrops, overflows, got, drops)
	}
	if got := drops["syn_queue_full"]; !countAgrees(t, "TCPReqQFullDrop", got, delta["TCPReqQFullDrop"], skipped) {
		t.Errorf("TCPReqQFullDrop moved by %d; tcptrace: %d syn_drop[syn_queue_full]", delta["TCPReqQFullDrop"], got)
	}
	if got := sumCounts(tr.eventsFor("syn_cookie", pid)); !countAgrees(t, "TCPReqQFullDoCookies", got, delta["TCPReqQFullDoCookies"], skipped) {
		t.Errorf("TCPReqQFullDoCookies moved by %d; tcptrace: %d syn_cookie", delta["TCPReqQFullDoCookies"], got)
	}
	if t.Failed() {
		// What a rare miss needs to be understood: every line of the run
		// (any pid) and tcptrace's summary.
		t.Logf("all events:\n%s\nstderr:\n%s", dump(tr.eventsFor("", 0)), tr.stderrText())
	}
}

var listenCounters = []string{"ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "TCPReqQFullDoCookies", "TCPSynRetrans"}

// The classic: a server that listens with backlog 6 and never accepts, and
// 20 clients at once. Handshakes complete one by one on loopback, the accept
// queue fills, and the later SYNs are dropped (and retransmitted, and
// dropped again). The server made its socket before tcptrace started, so its
// owner comes from the socket iterator.
func TestSynDropAcceptQueueFull(t *testing.T) {
	requireEvents(t, "syn_drop")
	ns := newNetns(t)
	srv := startServer(t, ns, 6)
	other := startSleeper(t)
	before := ns.netstat()
	tr := startTracer(t, listenerEvents...)
	mine := startTracer(t, append(listenerEvents, "--pid", strconv.Itoa(srv.PID))...)
	theirs := startTracer(t, append(listenerEvents, "--pid", strconv.Itoa(other))...)

	cl := startClients(t, ns, srv.Port, 20, 2500*time.Millisecond)
	cl.send()
	time.Sleep(100 * time.Millisecond)
	delta := counterDelta(before, ns.netstat(), listenCounters...)
	for _, r := range []*tracerRun{tr, mine, theirs} {
		if err := r.stop(syscall.SIGINT); err != nil {
			t.Fatalf("tcptrace: %v\n%s", err, r.stderrText())
		}
	}

	drops := tr.eventsFor("syn_drop", srv.PID)
	if len(drops) == 0 {
		t.Fatalf("no syn_drop from the server (pid %d); counters %v; stderr:\n%s", srv.PID, delta, tr.stderrText())
	}
	for _, e := range drops {
		if e.Reason != "accept_queue_full" || e.LPort != srv.Port || e.LAddr != "127.0.0.1" || !cl.ports[e.RPort] {
			t.Errorf("unexpected syn_drop (server port %d): %s", srv.Port, dump([]event{e}))
		}
		if e.Comm == "" || e.Details["accept_queue_max"] != 6.0 {
			t.Errorf("syn_drop lacks the owner or the queue limit: %s %v", dump([]event{e}), e.Details)
		}
	}
	checkListenCounters(t, tr, srv.PID, delta)
	// Each of the two may have missed what it reported as skipped runs.
	if got, want := sumCounts(mine.eventsFor("syn_drop", 0)), sumCounts(drops); !countAgrees(t, "--pid vs host-wide", got, want+tr.skippedRuns(), mine.skippedRuns()+tr.skippedRuns()) {
		t.Errorf("--pid %d (the server) counted %d drops, the host-wide run %d; stderr of --pid:\n%s", srv.PID, got, want, mine.stderrText())
	}
	if evs := theirs.eventsFor("syn_drop", 0); len(evs) != 0 {
		t.Errorf("--pid %d (unrelated) printed:\n%s", other, dump(evs))
	}
	t.Logf("counters %v; %d lines:\n%s", delta, len(drops), dump(drops))
}

// The third-ACK overflow: requests made while the accept queue had room
// whose final ACK arrives after it filled. 5 clients connect; 7 more do
// their handshake while every non-SYN segment to the server is dropped, so
// they believe they are connected while the server holds their requests;
// then the rule goes and they send a request. The accept queue (backlog 6,
// full at 7) takes two more; the other five overflow.
func TestListenOverflowThirdACK(t *testing.T) {
	requireEvents(t, "listen_overflow")
	for _, abort := range []int{0, 1} {
		t.Run(fmt.Sprintf("tcp_abort_on_overflow=%d", abort), func(t *testing.T) {
			ns := newNetns(t)
			ns.sysctl("net.ipv4.tcp_abort_on_overflow", strconv.Itoa(abort))
			srv := startServer(t, ns, 6)
			tr := startTracer(t, listenerEvents...)
			before := ns.netstat()

			first := startClients(t, ns, srv.Port, 5, 0)
			if first.established != 5 {
				t.Fatalf("%d of the first 5 clients connected", first.established)
			}
			ns.dropNonSYNTo(srv.Port)
			late := startClients(t, ns, srv.Port, 7, 2500*time.Millisecond)
			if late.established != 7 {
				t.Fatalf("%d of the 7 late clients believe they are connected, want 7", late.established)
			}
			ns.run("nft", "delete", "table", "ip", "tcptrace_e2e")
			res := late.send()
			first.send()
			delta := counterDelta(before, ns.netstat(), listenCounters...)
			if err := tr.stop(syscall.SIGINT); err != nil {
				t.Fatalf("tcptrace: %v\n%s", err, tr.stderrText())
			}
			// The server's SYN-ACK timers keep running: one may fire
			// between the counter read and the detach.
			after := counterDelta(before, ns.netstat(), "TCPSynRetrans")

			over := tr.eventsFor("listen_overflow", srv.PID)
			if len(over) == 0 {
				t.Fatalf("no listen_overflow; counters %v; stderr:\n%s", delta, tr.stderrText())
			}
			for _, e := range over {
				if e.Reason != "accept_queue_full" || e.LPort != srv.Port || !late.ports[e.RPort] {
					t.Errorf("unexpected listen_overflow: %s", dump([]event{e}))
				}
				if got := e.Details["tcp_abort_on_overflow"]; got != float64(abort) {
					t.Errorf("tcp_abort_on_overflow %v, want %d", got, abort)
				}
			}
			checkListenCounters(t, tr, srv.PID, delta)
			rtx := tr.eventsFor("synack_retransmit", srv.PID)
			if abort == 0 {
				if res["established_unacked"] == "0" {
					t.Errorf("no late client sits in ESTABLISHED with its request unacknowledged: %v", res)
				}
				if supported("synack_retransmit") {
					if len(rtx) == 0 {
						t.Errorf("no synack_retransmit from the server")
					}
					// Every SYN here was answered: the only SYN-class
					// retransmits in the namespace are the server's SYN-ACKs.
					if got := sumCounts(rtx); got < delta["TCPSynRetrans"] || got > after["TCPSynRetrans"] {
						t.Errorf("TCPSynRetrans moved by %d before tcptrace stopped, %d after; tcptrace: %d synack_retransmit",
							delta["TCPSynRetrans"], after["TCPSynRetrans"], got)
					}
				}
				if want := "believes it is connected"; !strings.Contains(over[0].Explanation, want) {
					t.Errorf("explanation lacks %q: %s", want, over[0].Explanation)
				}
			} else {
				if res["reset"] == "0" {
					t.Errorf("with tcp_abort_on_overflow=1 no late client was reset: %v", res)
				}
				if want := "gets a reset"; !strings.Contains(over[0].Explanation, want) {
					t.Errorf("explanation lacks %q: %s", want, over[0].Explanation)
				}
			}
			t.Logf("clients %v, counters %v:\n%s%s", res, delta, dump(over), dump(rtx))
		})
	}
}

// Half-open connections (every non-SYN segment to the server dropped) fill
// the SYN queue. Without syncookies the extra SYNs are dropped, counted in
// TCPReqQFullDrop; with them, answered with cookies, counted in
// TCPReqQFullDoCookies. A small tcp_max_syn_backlog instead brings the
// last-quarter rule, which keeps room for proven peers.
func TestSynQueueFull(t *testing.T) {
	requireEvents(t, "syn_drop", "syn_cookie")
	for _, tc := range []struct {
		name       string
		syncookies string
		maxSyn     string
		backlog    int
		event      string
		reason     string
	}{
		{"syncookies=0", "0", "", 4, "syn_drop", "syn_queue_full"},
		{"syncookies=1", "1", "", 4, "syn_cookie", "syn_queue_full"},
		{"small tcp_max_syn_backlog", "0", "8", 100, "syn_drop", "unproven_peer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := newNetns(t)
			ns.sysctl("net.ipv4.tcp_syncookies", tc.syncookies)
			if tc.maxSyn != "" {
				ns.sysctl("net.ipv4.tcp_max_syn_backlog", tc.maxSyn)
			}
			srv := startServer(t, ns, tc.backlog)
			ns.dropNonSYNTo(srv.Port)
			tr := startTracer(t, listenerEvents...)
			before := ns.netstat()
			cl := startClients(t, ns, srv.Port, 12, 0)
			cl.send()
			delta := counterDelta(before, ns.netstat(), listenCounters...)
			if err := tr.stop(syscall.SIGINT); err != nil {
				t.Fatalf("tcptrace: %v\n%s", err, tr.stderrText())
			}
			evs := tr.eventsFor(tc.event, srv.PID)
			if countBy(evs)[tc.reason] == 0 {
				t.Fatalf("no %s[%s]; counters %v; events:\n%s\nstderr:\n%s", tc.event, tc.reason, delta,
					dump(append(tr.eventsFor("syn_drop", 0), tr.eventsFor("syn_cookie", 0)...)), tr.stderrText())
			}
			for _, e := range evs {
				if e.LPort != srv.Port || !cl.ports[e.RPort] {
					t.Errorf("wrong connection: %s", dump([]event{e}))
				}
			}
			checkListenCounters(t, tr, srv.PID, delta)
			t.Logf("counters %v:\n%s", delta, dump(evs))
		})
	}
}

// A client whose final ACK never arrives (every non-SYN segment to the
// server dropped): the server retransmits its SYN-ACK from the request's
// timer, 1 s, then 2 s later. Counted against TCPSynRetrans (no client SYN
// is retransmitted here: each is answered).
func TestSynackRetransmit(t *testing.T) {
	requireEvents(t, "synack_retransmit")
	ns := newNetns(t)
	srv := startServer(t, ns, 16)
	ns.dropNonSYNTo(srv.Port)
	tr := startTracer(t, "-e", "synack_retransmit", "--interval", "500ms")
	before := ns.netstat()
	cl := startClients(t, ns, srv.Port, 1, 3500*time.Millisecond)
	cl.send()
	delta := counterDelta(before, ns.netstat(), listenCounters...)
	if err := tr.stop(syscall.SIGINT); err != nil {
		t.Fatalf("tcptrace: %v\n%s", err, tr.stderrText())
	}
	rtx := tr.eventsFor("synack_retransmit", srv.PID)
	if len(rtx) == 0 {
		t.Fatalf("no synack_retransmit; counters %v; stderr:\n%s", delta, tr.stderrText())
	}
	for _, e := range rtx {
		if e.Reason != "no_final_ack" || e.LPort != srv.Port || !cl.ports[e.RPort] {
			t.Errorf("unexpected synack_retransmit: %s", dump([]event{e}))
		}
	}
	if last := rtx[len(rtx)-1]; last.Details["synack_retransmits"].(float64) < 2 {
		t.Errorf("the request's retransmit count did not grow: %v", last.Details)
	}
	if got := sumCounts(rtx); got != delta["TCPSynRetrans"] {
		t.Errorf("TCPSynRetrans moved by %d; tcptrace: %d synack_retransmit", delta["TCPSynRetrans"], got)
	}
	t.Logf("counters %v:\n%s", delta, dump(rtx))
}
