package e2e

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var listenerEvents = []string{"-e", "syn_drop,syn_cookie,listen_overflow,synack_retransmit", "--interval", "500ms"}

// The classic: a server that listens with backlog 6 and never accepts; 7
// clients fill its accept queue, then 13 more connect, and their SYNs are
// dropped (and retransmitted, and dropped again). The server made its socket before tcptrace started, so its
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

	cl, fill := floodClients(t, ns, srv.Port, 6, 13, 2500*time.Millisecond)
	cl.send()
	fill.send()
	time.Sleep(100 * time.Millisecond)
	delta := counterDelta(before, ns.netstat(), listenCounters...)
	t.Logf("counters read at %s", time.Now().Format("15:04:05.000000"))
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
	checkListenCounters(t, tr, ns, srv.PID, delta)
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
			// The late clients' sockets outlive them, retransmitting
			// their request, and each retransmit overflows again: cut
			// the path so that the counters stand still while they are
			// read and tcptrace stops.
			ns.dropToPort(srv.Port)
			time.Sleep(50 * time.Millisecond)
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
			checkListenCounters(t, tr, ns, srv.PID, delta)
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
			checkListenCounters(t, tr, ns, srv.PID, delta)
			t.Logf("counters %v:\n%s", delta, dump(evs))
		})
	}
}

// Clients whose final ACK never arrives (every non-SYN segment to the
// server dropped): the server retransmits each SYN-ACK from the request's
// timer, 1, 3 and 7 s after the first with tcp_synack_retries=3. Every
// line's number is the retransmit's own, 1, 2, 3: the requests that
// retransmit together share a line per round, so each round's counts add up
// to the number of clients. Counted against TCPSynRetrans (no client SYN is
// retransmitted here: each is answered).
func TestSynackRetransmit(t *testing.T) {
	requireEvents(t, "synack_retransmit")
	const clients, retries = 4, 3
	ns := newNetns(t)
	ns.sysctl("net.ipv4.tcp_synack_retries", strconv.Itoa(retries))
	srv := startServer(t, ns, 16)
	ns.dropNonSYNTo(srv.Port)
	tr := startTracer(t, "-e", "synack_retransmit", "--interval", "500ms")
	before := ns.netstat()
	cl := startClients(t, ns, srv.Port, clients, 8*time.Second)
	cl.send()
	delta := counterDelta(before, ns.netstat(), listenCounters...)
	t.Logf("counters read at %s", time.Now().Format("15:04:05.000000"))
	if err := tr.stop(syscall.SIGINT); err != nil {
		t.Fatalf("tcptrace: %v\n%s", err, tr.stderrText())
	}
	rtx := tr.eventsFor("synack_retransmit", srv.PID)
	if len(rtx) == 0 {
		t.Fatalf("no synack_retransmit; counters %v; stderr:\n%s", delta, tr.stderrText())
	}
	perRound := map[int]uint64{}
	for _, e := range rtx {
		if e.Reason != "no_final_ack" || e.LPort != srv.Port || !cl.ports[e.RPort] {
			t.Errorf("unexpected synack_retransmit: %s", dump([]event{e}))
		}
		perRound[int(e.Details["synack_retransmits"].(float64))] += e.Count
	}
	for n := 1; n <= retries; n++ {
		if perRound[n] != clients {
			t.Errorf("retransmit %d: tcptrace counted %d, want one per client (%d); by number: %v", n, perRound[n], clients, perRound)
		}
	}
	if len(perRound) != retries {
		t.Errorf("retransmit numbers %v, want 1..%d", perRound, retries)
	}
	if got := sumCounts(rtx); got != delta["TCPSynRetrans"] || got != clients*retries {
		all := tr.eventsFor("synack_retransmit", 0)
		t.Errorf("TCPSynRetrans moved by %d (want %d); tcptrace: %d synack_retransmit of the server, %d of any process:\n%s\nstderr:\n%s",
			delta["TCPSynRetrans"], clients*retries, got, sumCounts(all), dump(all), tr.stderrText())
	}
	t.Logf("counters %v:\n%s", delta, dump(rtx))
}

// An accept-queue overflow on the syncookie path: an ACK that carries a
// syncookie has no request behind it, so cookie_v4_check() asks for the
// child itself and finds the accept queue (backlog 1, full at 2) full. The
// handshakes' final ACKs are dropped while the clients connect; then the
// rule goes and the clients send a request: each data segment is a final
// ACK, two make connections, the others overflow, again on every
// retransmit. ListenOverflows must equal syn_drop[accept_queue_full] +
// listen_overflow.
//   - tcp_syncookies=2: every SYN gets a cookie, every overflow is a cookie
//     ACK's.
//   - tcp_syncookies=1 (the default: a Redis or nginx with a small backlog
//     under a burst): the SYN queue (limit 1) keeps the first requests and
//     answers the rest with cookies, so both kinds of final ACK overflow.
func TestListenOverflowSyncookieACK(t *testing.T) {
	requireEvents(t, "listen_overflow", "syn_cookie")
	for _, tc := range []struct {
		syncookies string
		clients    int
	}{{"2", 4}, {"1", 8}} {
		t.Run("tcp_syncookies="+tc.syncookies, func(t *testing.T) {
			ns := newNetns(t)
			ns.sysctl("net.ipv4.tcp_syncookies", tc.syncookies)
			srv := startServer(t, ns, 1)
			tr := startTracer(t, listenerEvents...)
			before := ns.netstat()
			ns.dropNonSYNTo(srv.Port)
			cl := startClients(t, ns, srv.Port, tc.clients, 2500*time.Millisecond)
			ns.run("nft", "delete", "table", "ip", "tcptrace_e2e")
			res := cl.send()
			// The clients' sockets outlive them and keep retransmitting:
			// cut the path so that the counters stand still.
			ns.dropToPort(srv.Port)
			time.Sleep(50 * time.Millisecond)
			delta := counterDelta(before, ns.netstat(), listenCounters...)
			if err := tr.stop(syscall.SIGINT); err != nil {
				t.Fatalf("tcptrace: %v\n%s", err, tr.stderrText())
			}
			if delta["ListenOverflows"] == 0 || delta["TCPReqQFullDoCookies"] == 0 {
				t.Fatalf("the reproduction made no cookie or no overflow: counters %v, clients %v", delta, res)
			}
			over := tr.eventsFor("listen_overflow", srv.PID)
			var cookieLines int
			for _, e := range over {
				if e.Reason != "accept_queue_full" || e.LPort != srv.Port || !cl.ports[e.RPort] {
					t.Errorf("unexpected listen_overflow: %s %v", dump([]event{e}), e.Details)
				}
				if e.Details["syncookie_ack"] != true {
					continue
				}
				cookieLines++
				if want := "carried a syncookie"; !strings.Contains(e.Explanation, want) {
					t.Errorf("explanation lacks %q: %s", want, e.Explanation)
				}
			}
			if cookieLines == 0 {
				t.Errorf("no listen_overflow of a syncookie ACK; counters %v; events:\n%s\nstderr:\n%s", delta, dump(over), tr.stderrText())
			}
			checkListenCounters(t, tr, ns, srv.PID, delta)
			t.Logf("clients %v, counters %v:\n%s", res, delta, dump(over))
		})
	}
}

// The first SYN a CPU handles in a namespace, answered with a cookie at a
// SYN queue at its limit: the listener's state cannot tell that cookie from
// the SYN's own request, so only a counter baseline taken before it can.
// The SYN queue (backlog 1, every final ACK dropped) is filled from CPU 0;
// then clients on CPU 1, where this namespace has seen no SYN, get cookies.
//   - namespace made before tcptrace: the baseline tcptrace takes of every
//     CPU in every namespace when it attaches; the SYN queue is filled
//     before tcptrace starts, so it has seen no SYN there at all.
//   - namespace made after tcptrace started: its counters began at zero.
func TestSynCookieFirstOnCPU(t *testing.T) {
	requireEvents(t, "syn_cookie")
	if runtime.NumCPU() < 2 {
		t.Skipf("needs 2 CPUs, this machine has %d", runtime.NumCPU())
	}
	for _, tc := range []struct {
		name   string
		before bool // the namespace is made before tcptrace starts
		behind bool // made on the CPU whose namespace cookies lag the other's
	}{
		{"namespace made before tcptrace", true, false},
		{"namespace made after tcptrace", false, false},
		// Namespace cookies come from per-CPU batches (5.12 to 6.16, and
		// 6.18): a namespace made later on the CPU whose batch is behind
		// holds a smaller cookie than one made earlier on the other CPU.
		// "Made after tcptrace" must not be told by the cookie.
		{"namespace made after tcptrace with a smaller cookie", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tr *tracerRun
			behindCPU := -1
			if tc.behind {
				a, b := newNetnsOnCPU(t, 0), newNetnsOnCPU(t, 1)
				behindCPU = 0
				if a.cookie() > b.cookie() {
					behindCPU = 1
				}
				defer func() {
					t.Logf("namespace cookies: CPU 0's %d, CPU 1's %d", a.cookie(), b.cookie())
				}()
			}
			if !tc.before {
				tr = startTracer(t, listenerEvents...)
			}
			ns := newNetnsOnCPU(t, behindCPU)
			if tc.behind {
				t.Logf("the namespace under test, made on CPU %d after tcptrace started: cookie %d", behindCPU, ns.cookie())
			}
			counters := ns.netstat()
			srv := startServer(t, ns, 1)
			ns.dropNonSYNTo(srv.Port)
			fill := startClients(t, ns, srv.Port, 3, 0, helperPinEnv+"=0")
			if tc.before {
				tr = startTracer(t, listenerEvents...)
				counters = ns.netstat()
			}
			cl := startClients(t, ns, srv.Port, 4, 0, helperPinEnv+"=1")
			cl.send()
			fill.send()
			delta := counterDelta(counters, ns.netstat(), listenCounters...)
			if err := tr.stop(syscall.SIGINT); err != nil {
				t.Fatalf("tcptrace: %v\n%s", err, tr.stderrText())
			}
			if delta["TCPReqQFullDoCookies"] == 0 {
				t.Fatalf("no cookie was sent: counters %v", delta)
			}
			checkListenCounters(t, tr, ns, srv.PID, delta)
			if strings.Contains(tr.stderrText(), "SYNs not judged") {
				t.Errorf("tcptrace could not judge some SYNs:\n%s", tr.stderrText())
			}
			t.Logf("counters %v:\n%s", delta, dump(tr.eventsFor("syn_cookie", srv.PID)))
		})
	}
}

// Two listeners on one port, the way real servers run: the queue numbers
// of a drop must be those of the socket that dropped the SYN (the one the
// kernel's lookup picked), never a neighbour's, so that "the accept queue
// is full" comes with a full queue beside it.
//   - dualstack: 0.0.0.0 (backlog 2) and a v6only [::] (backlog 8): IPv4
//     clients reach only the first. The server starts after tcptrace (its
//     listeners are learnt at listen()).
//   - reuseport: two SO_REUSEPORT sockets on 127.0.0.1 (backlogs 1 and 8),
//     12 clients to each: the group's program sends the SYNs of CPU 0 to
//     the first, of CPU 1 to the second, so both overflow. The server
//     starts before tcptrace (its listeners are learnt from the socket
//     iterator).
func TestSynDropSharedPort(t *testing.T) {
	requireEvents(t, "syn_drop")
	for _, tc := range []struct {
		layout   string
		backlog  int
		clients  int
		tracerUp bool // tcptrace starts before the server
	}{
		{"dualstack", 2, 6, true},
		{"reuseport", 1, 12, false},
	} {
		t.Run(tc.layout, func(t *testing.T) {
			ns := newNetns(t)
			var tr *tracerRun
			if tc.tracerUp {
				tr = startTracer(t, listenerEvents...)
			}
			srv, ino, ino2 := startServers(t, ns, tc.layout, tc.backlog)
			if !tc.tracerUp {
				tr = startTracer(t, listenerEvents...)
			}
			before := ns.netstat()
			var env []string
			if tc.layout == "reuseport" {
				env = []string{helperPinEnv + "=0"}
			}
			cl := startClients(t, ns, srv.Port, tc.clients, 0, env...)
			cl.send()
			if tc.layout == "reuseport" {
				// The second member gets the SYNs handled on CPU 1.
				cl2 := startClients(t, ns, srv.Port, tc.clients, 0, helperPinEnv+"=1")
				cl2.send()
				for p := range cl2.ports {
					cl.ports[p] = true
				}
			}
			delta := counterDelta(before, ns.netstat(), listenCounters...)
			if err := tr.stop(syscall.SIGINT); err != nil {
				t.Fatalf("tcptrace: %v\n%s", err, tr.stderrText())
			}
			drops := tr.eventsFor("syn_drop", srv.PID)
			if len(drops) == 0 {
				t.Fatalf("no syn_drop; counters %v; stderr:\n%s", delta, tr.stderrText())
			}
			limit := map[uint64]float64{ino: float64(tc.backlog), ino2: 8}
			fromFirst, fromSecond := false, false
			for _, e := range drops {
				got := uint64(e.Details["listener_inode"].(float64))
				max, known := limit[got]
				switch {
				case e.Reason != "accept_queue_full" || e.LPort != srv.Port || !cl.ports[e.RPort]:
					t.Errorf("unexpected syn_drop: %s", dump([]event{e}))
				case !known || (tc.layout == "dualstack" && got != ino):
					t.Errorf("syn_drop names listener inode %d; the IPv4 listener is %d, the other %d: %s", got, ino, ino2, dump([]event{e}))
				case e.Details["accept_queue_max"] != max || e.Details["accept_queue"].(float64) <= max:
					t.Errorf("syn_drop of inode %d says accept queue %v of %v, want a full queue of %v: %s",
						got, e.Details["accept_queue"], e.Details["accept_queue_max"], max, dump([]event{e}))
				}
				fromFirst = fromFirst || got == ino
				fromSecond = fromSecond || got == ino2
			}
			if !fromFirst {
				t.Errorf("no syn_drop names the small listener (inode %d):\n%s", ino, dump(drops))
			}
			if tc.layout == "reuseport" && !fromSecond {
				t.Errorf("no syn_drop names the second member (inode %d):\n%s", ino2, dump(drops))
			}
			checkListenCounters(t, tr, ns, srv.PID, delta)
			t.Logf("listeners %d %d, counters %v:\n%s", ino, ino2, delta, dump(drops))
		})
	}
}
