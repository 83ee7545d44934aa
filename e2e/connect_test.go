package e2e

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var connEvents = []string{"-e", "syn_retransmit,connect_timeout,connect_refused,port_exhaustion,timewait_overflow,paws_reject,reset", "--interval", "500ms"}

// snmp reads the namespace's Tcp: counters (/proc/net/snmp), which
// /proc/net/netstat's TcpExt lacks: OutRsts, EstabResets.
func (n *netns) snmp() map[string]uint64 {
	n.t.Helper()
	lines := strings.Split(strings.TrimSpace(n.run("cat", "/proc/net/snmp")), "\n")
	m := map[string]uint64{}
	for i := 0; i+1 < len(lines); i += 2 {
		keys, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(keys) != len(vals) || keys[0] != "Tcp:" {
			continue
		}
		for j := 1; j < len(keys); j++ {
			v, _ := strconv.ParseInt(vals[j], 10, 64) // MaxConn is -1
			m[keys[j]] = uint64(v)
		}
	}
	return m
}

// dropSYNsTo makes a port a black hole for connection attempts: every SYN
// to it is dropped on arrival, as by a firewall in front of a dead host.
func (n *netns) dropSYNsTo(port int) {
	n.t.Helper()
	n.nft("table ip tcptrace_e2e {\n\tchain in { type filter hook input priority 0; tcp dport " + strconv.Itoa(port) +
		" tcp flags & syn == syn drop; }\n}\n")
}

func detail(e event, key string) float64 {
	v, _ := e.Details[key].(float64)
	return v
}

func near(got, want, tol float64) bool { return math.Abs(got-want) <= tol }

func stopAll(t *testing.T, runs ...*tracerRun) {
	t.Helper()
	for _, r := range runs {
		if err := r.stop(syscall.SIGINT); err != nil {
			t.Fatalf("tcptrace: %v\n%s", err, r.stderrText())
		}
	}
}

// A connect() to a port whose SYNs are dropped, with tcp_syn_retries=2 in
// the namespace: each SYN retransmit is reported when it goes out, at the
// backoff the kernel's rules give, then the timeout, all with the pid of
// the connecting process although they happen in timer context. The counts
// are checked against TCPSynRetrans and TCPTimeouts (one per retransmit
// timer firing: each retransmit, plus the one that gives up).
func TestSynRetransmitConnectTimeout(t *testing.T) {
	requireEvents(t, "syn_retransmit", "connect_timeout")
	ns := newNetns(t)
	ns.sysctl("net.ipv4.tcp_syn_retries", "2")
	const port = 9
	ns.dropSYNsTo(port)
	other := startSleeper(t)
	tr := startTracer(t, connEvents...)
	theirs := startTracer(t, append(connEvents, "--pid", strconv.Itoa(other))...)
	h := startHelper(t, ns, "connect", 0, helperPortEnv+"="+strconv.Itoa(port))
	mine := startTracer(t, append(connEvents, "--pid", strconv.Itoa(h.PID))...)
	before := ns.netstat()
	res := h.run()
	delta := counterDelta(before, ns.netstat(), "TCPSynRetrans", "TCPTimeouts")
	stopAll(t, tr, theirs, mine)

	if res["errno"] != strconv.Itoa(int(syscall.ETIMEDOUT)) {
		t.Fatalf("connect() ended with errno %s, want ETIMEDOUT", res["errno"])
	}
	rtx := tr.eventsFor("syn_retransmit", h.PID)
	tos := tr.eventsFor("connect_timeout", h.PID)
	t.Logf("helper %v, counters %v:\n%s%s", res, delta, dump(rtx), dump(tos))
	if len(rtx) == 0 || len(tos) != 1 {
		t.Fatalf("%d syn_retransmit and %d connect_timeout from pid %d; stderr:\n%s", len(rtx), len(tos), h.PID, tr.stderrText())
	}
	if got := sumCounts(rtx); got != delta["TCPSynRetrans"] {
		t.Errorf("TCPSynRetrans moved by %d; tcptrace: %d syn_retransmit", delta["TCPSynRetrans"], got)
	}
	if got := sumCounts(rtx) + sumCounts(tos); got != delta["TCPTimeouts"] {
		t.Errorf("TCPTimeouts moved by %d; tcptrace: %d syn_retransmit + %d connect_timeout", delta["TCPTimeouts"], sumCounts(rtx), sumCounts(tos))
	}
	lport, _ := strconv.Atoi(res["lport"])
	prevMs, attempt := 0.0, uint64(0)
	for i, e := range rtx {
		attempt += e.Count
		if e.RPort != port || e.RAddr != "127.0.0.1" || (lport != 0 && e.LPort != lport) || e.Comm == "" || e.Reason != "no_syn_ack" {
			t.Errorf("unexpected syn_retransmit: %s", dump([]event{e}))
		}
		// A lone connect: a line per retransmit, attempts 1, 2, 3...,
		// never aggregated with a range.
		if n := detail(e, "syn_retransmits"); n != float64(attempt) || e.Details["attempt_min"] != nil {
			t.Errorf("line %d reports attempt %v (range %v..%v), the lines so far count %d", i+1, n, e.Details["attempt_min"], e.Details["attempt_max"], attempt)
		}
		if detail(e, "tcp_syn_retries") != 2 {
			t.Errorf("tcp_syn_retries %v, want 2 (set in the namespace)", e.Details["tcp_syn_retries"])
		}
		// The backoff the kernel's rules predict, against when it went out.
		// (A transmit that failed on this busy host retries sooner, without
		// backoff: only clean retransmits are timed.)
		since := detail(e, "since_connect_ms")
		if _, failed := e.Details["transmit_error"]; !failed && e.Count == 1 && !near(since-prevMs, detail(e, "backoff_ms"), 300) {
			t.Errorf("retransmit %d went out %.0f ms after the previous SYN, predicted backoff %v ms", i+1, since-prevMs, e.Details["backoff_ms"])
		}
		prevMs = since
	}
	to := tos[0]
	if uint64(detail(to, "syn_retransmits")) != sumCounts(rtx) || to.RPort != port || to.Reason != "no_syn_ack" {
		t.Errorf("connect_timeout does not match the retransmits: %s %v", dump(tos), to.Details)
	}
	elapsed, _ := strconv.ParseFloat(res["elapsed_ms"], 64)
	if since := detail(to, "since_connect_ms"); !near(since, elapsed, 150) || !near(since, detail(to, "gives_up_after_ms"), 500) {
		t.Errorf("connect_timeout after %.0f ms; connect() took %.0f ms; predicted %v ms", since, elapsed, to.Details["gives_up_after_ms"])
	}
	if uint64(detail(rtx[0], "syn_retransmits_max")) != sumCounts(rtx) {
		t.Errorf("predicted %v retransmits, saw %d", rtx[0].Details["syn_retransmits_max"], sumCounts(rtx))
	}
	if got, want := sumCounts(mine.eventsFor("syn_retransmit", 0))+sumCounts(mine.eventsFor("connect_timeout", 0)), sumCounts(rtx)+1; got != want {
		t.Errorf("--pid %d (the client) counted %d events, the host-wide run %d", h.PID, got, want)
	}
	if evs := append(theirs.eventsFor("syn_retransmit", 0), theirs.eventsFor("connect_timeout", 0)...); len(evs) != 0 {
		t.Errorf("--pid %d (unrelated) printed:\n%s", other, dump(evs))
	}
}

// A destination that drops every SYN and 40 connect()s to it at once (a
// frozen server, a dead backend behind a pool): without aggregation, a line
// per retransmit, 200 here. Each burst of retransmits must give at most a
// line at once and the per-interval lines, whose counts add up to the
// namespace's TCPSynRetrans (only these clients connect in it), with the
// range of attempt numbers each line stands for.
func TestSynRetransmitManyConnections(t *testing.T) {
	requireEvents(t, "syn_retransmit")
	const port, conns = 9, 40
	ns := newNetns(t)
	ns.sysctl("net.ipv4.tcp_syn_retries", "2")
	ns.dropSYNsTo(port)
	ino := ns.inode()
	tr := startTracer(t, connEvents...)
	h := startHelper(t, ns, "connects", 0, helperPortEnv+"="+strconv.Itoa(port), helperCountEnv+"="+strconv.Itoa(conns))
	before := ns.netstat()
	res := h.run()
	delta := counterDelta(before, ns.netstat(), "TCPSynRetrans")
	stopAll(t, tr)

	if res["timeouts"] != strconv.Itoa(conns) {
		t.Fatalf("%s of %d connect()s timed out", res["timeouts"], conns)
	}
	evs := inNetns(tr.eventsFor("syn_retransmit", 0), ino)
	t.Logf("helper %v, counters %v:\n%s", res, delta, dump(evs))
	if got := sumCounts(evs); got != delta["TCPSynRetrans"] || got < conns {
		t.Fatalf("TCPSynRetrans moved by %d; tcptrace: %d syn_retransmit in %d lines; stderr:\n%s", delta["TCPSynRetrans"], got, len(evs), tr.stderrText())
	}
	// Every client retransmits as often: the kernel's count over the
	// clients is the number of bursts.
	bursts := int(delta["TCPSynRetrans"] / conns)
	if len(evs) > 3*bursts+1 {
		t.Errorf("%d lines for %d retransmits in %d bursts, want at most %d", len(evs), delta["TCPSynRetrans"], bursts, 3*bursts+1)
	}
	ranged := 0
	for _, e := range evs {
		if e.PID != h.PID || e.RPort != port || e.Reason != "no_syn_ack" {
			t.Errorf("unexpected syn_retransmit: %s", dump([]event{e}))
		}
		lo, hi := detail(e, "attempt_min"), detail(e, "attempt_max")
		if _, ok := e.Details["attempt_min"]; !ok {
			if e.Count != 1 {
				t.Errorf("a line of its own for %d retransmits: %s", e.Count, dump([]event{e}))
			}
			continue
		}
		ranged++
		if lo < 1 || hi < lo || hi > float64(bursts) || uint64(hi-lo+1) > e.Count {
			t.Errorf("attempts %v..%v for %d retransmits, each client made %d: %s", lo, hi, e.Count, bursts, dump([]event{e}))
		}
		if e.Count > 1 && !strings.Contains(e.Explanation, fmt.Sprintf("retransmitted %d times by connections retransmitting to it at once", e.Count)) {
			t.Errorf("explanation: %s", e.Explanation)
		}
	}
	if ranged == 0 {
		t.Errorf("no line aggregated the clients' retransmits")
	}
}

// A client whose SYNs a listener on the same host drops (its accept queue
// is full and nobody accepts): each syn_retransmit must name the listener's
// syn_drop with its queue numbers, not the network. Counted against
// ListenOverflows (every SYN dropped) and TCPSynRetrans.
func TestSynRetransmitLocalSynDrop(t *testing.T) {
	requireEvents(t, "syn_retransmit", "syn_drop")
	ns := newNetns(t)
	tr := startTracer(t, "-e", "syn_retransmit,syn_drop", "--interval", "500ms")
	h := startHelper(t, ns, "fullqueue", 0, helperUserTimeoutEnv+"=3500")
	before := ns.netstat()
	res := h.run()
	delta := counterDelta(before, ns.netstat(), "TCPSynRetrans", "ListenOverflows")
	stopAll(t, tr)

	drops := inNetns(tr.eventsFor("syn_drop", h.PID), ns.inode())
	rtx := tr.eventsFor("syn_retransmit", h.PID)
	t.Logf("helper %v, counters %v:\n%s%s", res, delta, dump(drops), dump(rtx))
	if res["errno"] != strconv.Itoa(int(syscall.ETIMEDOUT)) {
		t.Fatalf("connect() ended with errno %s, want ETIMEDOUT", res["errno"])
	}
	if sumCounts(rtx) != delta["TCPSynRetrans"] || len(rtx) == 0 || sumCounts(drops) != delta["ListenOverflows"] || sumCounts(drops) != sumCounts(rtx)+1 {
		t.Fatalf("%d syn_retransmit (TCPSynRetrans moved by %d), %d syn_drop (ListenOverflows moved by %d): want a drop for each SYN; stderr:\n%s",
			sumCounts(rtx), delta["TCPSynRetrans"], sumCounts(drops), delta["ListenOverflows"], tr.stderrText())
	}
	listener := fmt.Sprintf("127.0.0.1:%d", h.Port)
	for _, e := range rtx {
		if e.LPort != h.LPort || e.RPort != h.Port {
			t.Errorf("unexpected syn_retransmit: %s", dump([]event{e}))
		}
		if e.Details["refused_by_event"] != "syn_drop" || e.Details["refused_by_reason"] != "accept_queue_full" || e.Details["refused_by_socket"] != listener ||
			detail(e, "listener_accept_queue") != 1 || detail(e, "listener_accept_queue_max") != 0 {
			t.Errorf("details %v, want the listener %s's syn_drop accept_queue_full, accept queue 1 of 0", e.Details, listener)
		}
		want := fmt.Sprintf("the listener on %s on this host dropped this connection's SYN", listener)
		if !strings.Contains(e.Explanation, want) || !strings.Contains(e.Explanation, "syn_drop accept_queue_full, accept queue 1 of 0") || strings.Contains(e.Explanation, "firewall") {
			t.Errorf("explanation lacks %q and the queue, or still blames the path: %s", want, e.Explanation)
		}
	}
}

// The NAT case of PAWS with real NAT between two namespaces: a client's
// connection to the server ends with the server closing first (TIME_WAIT on
// the server, holding that client's timestamp); a second client behind the
// same NAT, whose clock is 1000 s behind, gets the same address and port
// after NAT, and the TIME_WAIT socket rejects its SYN by PAWS. The second
// client's syn_retransmit lines must name that paws_reject, matched by the
// SYN's sequence number across the NAT, and both lines must say what
// tcp_rfc1337 (read from the server's namespace) makes of it: with 0 the
// client's reset ends the TIME_WAIT and its next SYN gets through at once;
// with 1 every retry is rejected until connect() gives up. Counted against
// the server namespace's PAWSTimewait (PAWSEstab before 6.16) and the
// client namespace's TCPSynRetrans.
func TestSynRetransmitPawsNAT(t *testing.T) {
	requireEvents(t, "syn_retransmit", "paws_reject")
	requireTimeWaitPaws(t)
	for _, rfc1337 := range []string{"0", "1"} {
		t.Run("tcp_rfc1337="+rfc1337, func(t *testing.T) {
			srvNS, cliNS := newNetns(t), newNetns(t)
			run(t, "ip", "link", "add", "s0", "netns", srvNS.name, "type", "veth", "peer", "name", "c0", "netns", cliNS.name)
			srvNS.run("ip", "addr", "add", "10.77.0.1/24", "dev", "s0")
			srvNS.run("ip", "link", "set", "s0", "up")
			cliNS.run("ip", "addr", "add", "10.77.0.2/24", "dev", "c0")
			cliNS.run("ip", "addr", "add", "10.77.0.3/24", "dev", "c0")
			cliNS.run("ip", "link", "set", "c0", "up")
			cliNS.nft(fmt.Sprintf("table ip tcptrace_e2e_nat {\n\tchain post { type nat hook postrouting priority 100; ip daddr 10.77.0.1 tcp dport 80 snat to 10.77.0.3:%d; }\n}\n", natPort))
			cliNS.sysctl("net.netfilter.nf_conntrack_tcp_timeout_time_wait", "1")
			cliNS.sysctl("net.ipv4.tcp_timestamps", "2")
			cliNS.sysctl("net.ipv4.tcp_syn_retries", "1")
			srvNS.sysctl("net.ipv4.tcp_rfc1337", rfc1337)
			counter := "PAWSTimewait"
			if _, ok := srvNS.netstat()[counter]; !ok {
				counter = "PAWSEstab"
			}
			tr := startTracer(t, "-e", "syn_retransmit,paws_reject", "--interval", "500ms")
			srv := startHelper(t, srvNS, "twserver", 0, helperPortEnv+"=80")
			cl := startHelper(t, cliNS, "natclients", 0, helperPortEnv+"=80")
			srvBefore, cliBefore := srvNS.netstat(), cliNS.netstat()
			fmt.Fprintln(srv.stdin, "GO")
			res := cl.run()
			sres := srv.line("RESULT")
			srv.cmd.Wait()
			srvDelta, cliDelta := counterDelta(srvBefore, srvNS.netstat(), counter), counterDelta(cliBefore, cliNS.netstat(), "TCPSynRetrans")
			stopAll(t, tr)

			paws := inNetns(tr.eventsFor("paws_reject", 0), srvNS.inode())
			rtx := inNetns(tr.eventsFor("syn_retransmit", cl.PID), cliNS.inode())
			t.Logf("client %v, server %v, %s %v, client %v:\n%s%s", res, sres, counter, srvDelta, cliDelta, dump(paws), dump(rtx))
			if sumCounts(paws) != srvDelta[counter] || len(paws) == 0 || sumCounts(rtx) != cliDelta["TCPSynRetrans"] || len(rtx) == 0 {
				t.Fatalf("%d paws_reject (%s moved by %d), %d syn_retransmit (TCPSynRetrans moved by %d); stderr:\n%s",
					sumCounts(paws), counter, srvDelta[counter], sumCounts(rtx), cliDelta["TCPSynRetrans"], tr.stderrText())
			}
			// What tcp_rfc1337 does, measured: the client connects at
			// once with 0 (one SYN rejected), never with 1.
			nat := fmt.Sprintf("10.77.0.3:%d", natPort)
			if rfc1337 == "0" && (res["errno"] != "0" || sres["second"] != nat || srvDelta[counter] != 1) {
				t.Errorf("tcp_rfc1337=0: the second client got errno %s, the server accepted %s after %d rejects; want a connection from %s after one", res["errno"], sres["second"], srvDelta[counter], nat)
			}
			if rfc1337 == "1" && (res["errno"] != strconv.Itoa(int(syscall.ETIMEDOUT)) || sres["second"] != "none" || srvDelta[counter] != cliDelta["TCPSynRetrans"]+1) {
				t.Errorf("tcp_rfc1337=1: the second client got errno %s, the server accepted %s, %d rejects for %d retransmits; want every SYN rejected and ETIMEDOUT", res["errno"], sres["second"], srvDelta[counter], cliDelta["TCPSynRetrans"])
			}
			seqs := map[float64]bool{}
			for _, e := range paws {
				seqs[detail(e, "seq")] = true
				if e.RAddr != "10.77.0.3" || e.RPort != natPort || e.LPort != 80 || e.Details["syn"] != true || e.Details["tcp_rfc1337"] != detailNum(rfc1337) {
					t.Errorf("unexpected paws_reject: %s %v", dump([]event{e}), e.Details)
				}
				if !strings.Contains(e.Explanation, "how long the client suffers: net.ipv4.tcp_rfc1337="+rfc1337+" here") {
					t.Errorf("paws_reject does not say what tcp_rfc1337=%s does: %s", rfc1337, e.Explanation)
				}
			}
			for _, e := range rtx {
				if e.LPort != 5002 || e.RPort != 80 || !seqs[detail(e, "isn")] {
					t.Errorf("syn_retransmit from port %d, ISN %v: not the rejected SYNs' (%v): %s", e.LPort, e.Details["isn"], seqs, dump([]event{e}))
				}
				if e.Details["refused_by_event"] != "paws_reject" || e.Details["refused_by_reason"] != "timewait_paws" || e.Details["refused_client_after_nat"] != nat ||
					e.Details["tcp_rfc1337"] != detailNum(rfc1337) || detail(e, "refused_tsval_behind_by") < 990000 {
					t.Errorf("details %v, want the paws_reject of %s behind NAT, tcp_rfc1337 %s, 1000 s behind", e.Details, nat, rfc1337)
				}
				want := fmt.Sprintf("a TIME_WAIT socket on this host (10.77.0.1:80, from %s, the client as NAT rewrote it; matched by the SYN's sequence number %.0f)", nat, detail(e, "isn"))
				if !strings.Contains(e.Explanation, want) || !strings.Contains(e.Explanation, "net.ipv4.tcp_rfc1337="+rfc1337+" there") || strings.Contains(e.Explanation, "firewall") {
					t.Errorf("explanation lacks %q or tcp_rfc1337=%s, or still blames the path: %s", want, rfc1337, e.Explanation)
				}
			}
		})
	}
}

func detailNum(s string) float64 {
	v, _ := strconv.ParseFloat(s, 64)
	return v
}

// The socket's own limits on a connect to a black hole: TCP_SYNCNT replaces
// tcp_syn_retries, TCP_USER_TIMEOUT cuts the attempt short (and clamps the
// retransmit timer to it). connect_timeout must come when the kernel's
// rules, applied by tcptrace to the numbers it read, say it comes.
func TestConnectTimeoutSocketLimits(t *testing.T) {
	requireEvents(t, "connect_timeout")
	for _, tc := range []struct {
		name, env, detail string
		value             float64
	}{
		{"TCP_SYNCNT=1", helperSyncntEnv + "=1", "tcp_syncnt", 1},
		{"TCP_USER_TIMEOUT=2500ms", helperUserTimeoutEnv + "=2500", "tcp_user_timeout_ms", 2500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := newNetns(t)
			const port = 9
			ns.dropSYNsTo(port)
			tr := startTracer(t, connEvents...)
			h := startHelper(t, ns, "connect", 0, helperPortEnv+"="+strconv.Itoa(port), tc.env)
			before := ns.netstat()
			res := h.run()
			delta := counterDelta(before, ns.netstat(), "TCPSynRetrans")
			stopAll(t, tr)
			tos := tr.eventsFor("connect_timeout", h.PID)
			t.Logf("helper %v, counters %v:\n%s", res, delta, dump(tos))
			if res["errno"] != strconv.Itoa(int(syscall.ETIMEDOUT)) || len(tos) != 1 {
				t.Fatalf("errno %s, %d connect_timeout; stderr:\n%s", res["errno"], len(tos), tr.stderrText())
			}
			e := tos[0]
			elapsed, _ := strconv.ParseFloat(res["elapsed_ms"], 64)
			if detail(e, tc.detail) != tc.value {
				t.Errorf("%s = %v, want %v", tc.detail, e.Details[tc.detail], tc.value)
			}
			if !near(detail(e, "gives_up_after_ms"), elapsed, 300) || uint64(detail(e, "syn_retransmits_max")) != delta["TCPSynRetrans"] {
				t.Errorf("predicted %v ms and %v retransmits; connect() took %.0f ms and %d retransmits",
					e.Details["gives_up_after_ms"], e.Details["syn_retransmits_max"], elapsed, delta["TCPSynRetrans"])
			}
		})
	}
}

// probeHooks is what --list-probes says an event's chosen path hooks.
func probeHooks(t *testing.T, event string) string {
	t.Helper()
	args := []string{"--list-probes", "-e", event}
	if forcePath != "" {
		args = append(args, "--force-path", forcePath)
	}
	out, _ := exec.Command(tcptraceBin, args...).CombinedOutput()
	return string(out)
}

// SYNs dropped on output, by a firewall rule on the connecting host: each
// retransmit is counted by the kernel (TCPSynRetrans) before the IP layer
// refuses it with EPERM. Where the probe sees failed attempts (the 6.17+
// tracepoint, fentry, kprobe) each is a line with transmit_error; the
// tracepoint of older kernels fires only for sent ones, and the count then
// shows in connect_timeout's syn_retransmits, read from the socket.
func TestSynRetransmitDroppedOnOutput(t *testing.T) {
	requireEvents(t, "syn_retransmit", "connect_timeout")
	ns := newNetns(t)
	ns.sysctl("net.ipv4.tcp_syn_retries", "1")
	const port = 9
	ns.nft("table ip tcptrace_e2e {\n\tchain out { type filter hook output priority 0; tcp dport 9 drop; }\n}\n")
	chosen, _, _ := strings.Cut(probeHooks(t, "syn_retransmit"), "\n")
	seesFailures := !strings.Contains(chosen, " tracepoint ") || strings.Contains(chosen, "with err")
	tr := startTracer(t, connEvents...)
	h := startHelper(t, ns, "connect", 0, helperPortEnv+"="+strconv.Itoa(port))
	before := ns.netstat()
	res := h.run()
	delta := counterDelta(before, ns.netstat(), "TCPSynRetrans", "TCPTimeouts")
	stopAll(t, tr)

	rtx := tr.eventsFor("syn_retransmit", h.PID)
	tos := tr.eventsFor("connect_timeout", h.PID)
	t.Logf("helper %v, counters %v, probe sees failed transmits: %v:\n%s%s", res, delta, seesFailures, dump(rtx), dump(tos))
	if res["errno"] != strconv.Itoa(int(syscall.ETIMEDOUT)) || delta["TCPSynRetrans"] == 0 {
		t.Fatalf("connect() ended with errno %s after %d SYN retransmits, want ETIMEDOUT after some", res["errno"], delta["TCPSynRetrans"])
	}
	if len(tos) != 1 || uint64(detail(tos[0], "syn_retransmits")) != delta["TCPSynRetrans"] {
		t.Fatalf("connect_timeout %s does not carry the %d retransmits TCPSynRetrans counted; stderr:\n%s", dump(tos), delta["TCPSynRetrans"], tr.stderrText())
	}
	if !seesFailures {
		if len(rtx) != 0 {
			t.Errorf("the tracepoint before 6.17 fires only for sent retransmits, yet:\n%s", dump(rtx))
		}
		return
	}
	if got := sumCounts(rtx); got != delta["TCPSynRetrans"] {
		t.Errorf("TCPSynRetrans moved by %d; tcptrace: %d syn_retransmit", delta["TCPSynRetrans"], got)
	}
	for _, e := range rtx {
		if e.Details["transmit_error"] != "EPERM" || !strings.Contains(e.Explanation, "never left this host") {
			t.Errorf("a retransmit refused by the output rule shows no EPERM: %s %v", dump([]event{e}), e.Details)
		}
	}
}

// A connect() to a port nothing listens on: the reset comes back at once.
func TestConnectRefused(t *testing.T) {
	requireEvents(t, "connect_refused")
	ns := newNetns(t)
	tr := startTracer(t, connEvents...)
	h := startHelper(t, ns, "connect", 0, helperPortEnv+"=9")
	before := ns.snmp()
	res := h.run()
	delta := counterDelta(before, ns.snmp(), "OutRsts", "AttemptFails")
	stopAll(t, tr)
	if res["errno"] != strconv.Itoa(int(syscall.ECONNREFUSED)) {
		t.Fatalf("connect() ended with errno %s, want ECONNREFUSED", res["errno"])
	}
	evs := tr.eventsFor("connect_refused", h.PID)
	t.Logf("helper %v, counters %v:\n%s", res, delta, dump(evs))
	if sumCounts(evs) != 1 || delta["AttemptFails"] != 1 {
		t.Fatalf("%d connect_refused from pid %d (AttemptFails moved by %d); stderr:\n%s", sumCounts(evs), h.PID, delta["AttemptFails"], tr.stderrText())
	}
	e := evs[0]
	lport, _ := strconv.Atoi(res["lport"])
	if e.RPort != 9 || e.Reason != "reset_answered_syn" || e.Details["errno"] != "ECONNREFUSED" || (lport != 0 && e.LPort != lport) {
		t.Errorf("unexpected connect_refused: %s %v", dump(evs), e.Details)
	}
	// The reset answered the first SYN: no retransmit before it (the
	// first would go out after 1 s). Not a bound on the time it took,
	// which an emulated CPU stretches.
	if detail(e, "syn_retransmits") != 0 {
		t.Errorf("refused after %v SYN retransmits (%.0f ms): the reset answers the first SYN", e.Details["syn_retransmits"], detail(e, "since_connect_ms"))
	}
	if evs := tr.eventsFor("syn_retransmit", h.PID); len(evs) != 0 {
		t.Errorf("a refused connect retransmitted its SYN:\n%s", dump(evs))
	}
}

// connect_refused is aggregated per destination: two processes refused on
// the same ports of two addresses (127.1.0.0 and 127.2.0.0, each port once)
// must give one line per address and port, each with its own count, adding
// up to the refused connects and to the namespace's AttemptFails. (An IPv4
// socket keeps a v4-mapped copy of its peer in skc_v6_daddr: a key that
// folded the two merged every address behind one port.)
func TestConnectRefusedPerDestination(t *testing.T) {
	requireEvents(t, "connect_refused")
	ns := newNetns(t)
	tr := startTracer(t, "-e", "connect_refused")
	var hs []*helperProc
	for i := 0; i < 2; i++ {
		hs = append(hs, startHelper(t, ns, "refuse", 500*time.Millisecond, helperRateEnv+"=400", helperSenderEnv+"="+strconv.Itoa(i)))
	}
	before := ns.snmp()
	refused := map[int]int{}
	for _, h := range hs {
		res := h.run()
		refused[h.PID] = atoi(t, res["refused"])
	}
	delta := counterDelta(before, ns.snmp(), "AttemptFails")
	stopAll(t, tr)
	lines := map[string]uint64{}
	var total uint64
	for i, h := range hs {
		evs := tr.eventsFor("connect_refused", h.PID)
		want := fmt.Sprintf("127.%d.0.0", i+1)
		for _, e := range evs {
			if e.RAddr != want || e.Count != 1 {
				t.Errorf("sender %d (to %s, each port once): %s", i, want, dump([]event{e}))
			}
			k := fmt.Sprintf("%s:%d", e.RAddr, e.RPort)
			if lines[k]++; lines[k] > 1 {
				t.Errorf("two lines for %s", k)
			}
		}
		if n := sumCounts(evs); n != uint64(refused[h.PID]) {
			t.Errorf("sender %d: %d refused connects, tcptrace counted %d", i, refused[h.PID], n)
		}
		total += sumCounts(evs)
	}
	t.Logf("%d refused connects to %d destinations; AttemptFails %d", total, len(lines), delta["AttemptFails"])
	if total == 0 || total != delta["AttemptFails"] {
		t.Errorf("tcptrace counted %d connect_refused, AttemptFails moved by %d", total, delta["AttemptFails"])
	}
}

// The same over IPv6, with -4 and -6 tracers beside the host-wide one.
func TestConnectRefusedIPv6(t *testing.T) {
	requireEvents(t, "connect_refused")
	ns := newNetns(t)
	tr := startTracer(t, connEvents...)
	v4 := startTracer(t, append(connEvents, "-4")...)
	v6 := startTracer(t, append(connEvents, "-6")...)
	h := startHelper(t, ns, "connect", 0, helperPortEnv+"=9", helperFamilyEnv+"=6")
	res := h.run()
	stopAll(t, tr, v4, v6)
	if res["errno"] != strconv.Itoa(int(syscall.ECONNREFUSED)) {
		t.Fatalf("connect() to [::1]:9 ended with errno %s, want ECONNREFUSED", res["errno"])
	}
	evs := tr.eventsFor("connect_refused", h.PID)
	t.Logf("helper %v:\n%s", res, dump(evs))
	lport, _ := strconv.Atoi(res["lport"])
	if len(evs) != 1 || evs[0].Family != 6 || evs[0].RAddr != "::1" || evs[0].RPort != 9 || evs[0].LAddr != "::1" || (lport != 0 && evs[0].LPort != lport) {
		t.Fatalf("want one IPv6 connect_refused to [::1]:9; stderr:\n%s", tr.stderrText())
	}
	if got := sumCounts(v6.eventsFor("connect_refused", h.PID)); got != 1 {
		t.Errorf("-6 counted %d, want 1", got)
	}
	if evs := v4.eventsFor("connect_refused", 0); len(evs) != 0 {
		t.Errorf("-4 printed:\n%s", dump(evs))
	}
}

// A client with 8 local ports making short connections that it closes
// first: each leaves a TIME_WAIT socket holding its port for 60 s, and once
// the 8 are taken connect() fails with EADDRNOTAVAIL (tcp_tw_reuse off).
func TestPortExhaustion(t *testing.T) {
	requireEvents(t, "port_exhaustion")
	ns := newNetns(t)
	ns.sysctl("net.ipv4.ip_local_port_range", "40000 40007")
	ns.sysctl("net.ipv4.tcp_tw_reuse", "0")
	tr := startTracer(t, connEvents...)
	h := startHelper(t, ns, "shortconns", 0, helperCountEnv+"=14", helperPortEnv+"=8080")
	mine := startTracer(t, append(connEvents, "--pid", strconv.Itoa(h.PID))...)
	res := h.run()
	tw := strings.Count(ns.run("ss", "-Htan", "state", "time-wait"), "\n")
	stopAll(t, tr, mine)

	failed, _ := strconv.Atoi(res["eaddrnotavail"])
	evs := tr.eventsFor("port_exhaustion", h.PID)
	t.Logf("helper %v, %d in TIME_WAIT:\n%s", res, tw, dump(evs))
	if failed == 0 || res["connected"] != "8" {
		t.Fatalf("the client did not run out of ports: %v", res)
	}
	if got := sumCounts(evs); got != uint64(failed) {
		t.Fatalf("%d connect()s failed with EADDRNOTAVAIL; tcptrace: %d port_exhaustion; stderr:\n%s", failed, got, tr.stderrText())
	}
	// The first line is printed while the client runs, so its TIME_WAIT
	// sockets to the server are counted from /proc/<pid>/net/tcp.
	if got := evs[0].Details["timewait_to_destination"]; got != float64(tw) {
		t.Errorf("timewait_to_destination %v, want %d", got, tw)
	}
	for _, e := range evs {
		if e.RPort != h.Port || e.RAddr != "127.0.0.1" || e.Reason != "no_free_local_port" || e.Comm == "" {
			t.Errorf("unexpected port_exhaustion: %s", dump([]event{e}))
		}
		for k, want := range map[string]any{
			"ip_local_port_range": "40000 40007", "local_ports": 8.0, "tcp_tw_reuse": 0.0,
			"timewait_in_netns": float64(tw),
		} {
			if e.Details[k] != want {
				t.Errorf("%s = %v, want %v", k, e.Details[k], want)
			}
		}
		for _, want := range []string{"40000-40007 (8 ports)", "8 sockets in TIME_WAIT", "tcp_tw_reuse=0", "tcp_tw_recycle (removed in Linux 4.12)"} {
			if !strings.Contains(e.Explanation, want) {
				t.Errorf("explanation lacks %q: %s", want, e.Explanation)
			}
		}
	}
	if got := sumCounts(mine.eventsFor("port_exhaustion", 0)); got != uint64(failed) {
		t.Errorf("--pid %d counted %d, want %d", h.PID, got, failed)
	}
}

// tcp_max_tw_buckets=4 and 12 short connections closed by the client: the
// first 4 get their TIME_WAIT socket, the others are closed at once,
// counted in TCPTimeWaitOverflow.
func TestTimeWaitOverflow(t *testing.T) {
	requireEvents(t, "timewait_overflow")
	ns := newNetns(t)
	ns.sysctl("net.ipv4.tcp_max_tw_buckets", "4")
	tr := startTracer(t, connEvents...)
	h := startHelper(t, ns, "shortconns", 0, helperCountEnv+"=12")
	before := ns.netstat()
	res := h.run()
	delta := counterDelta(before, ns.netstat(), "TCPTimeWaitOverflow")
	stopAll(t, tr)

	evs := tr.eventsFor("timewait_overflow", 0)
	t.Logf("helper %v, counters %v:\n%s", res, delta, dump(evs))
	if res["connected"] != "12" || delta["TCPTimeWaitOverflow"] == 0 {
		t.Fatalf("no overflow happened: %v %v", res, delta)
	}
	if got := sumCounts(evs); got != delta["TCPTimeWaitOverflow"] {
		t.Fatalf("TCPTimeWaitOverflow moved by %d; tcptrace: %d timewait_overflow; stderr:\n%s", delta["TCPTimeWaitOverflow"], got, tr.stderrText())
	}
	for _, e := range evs {
		if e.PID != h.PID || e.RPort != h.Port || e.Reason != "tw_buckets_full" {
			t.Errorf("unexpected timewait_overflow (client pid %d, server port %d): %s", h.PID, h.Port, dump([]event{e}))
		}
		if detail(e, "tcp_max_tw_buckets") != 4 || detail(e, "timewait_in_netns") != 4 {
			t.Errorf("details %v, want tcp_max_tw_buckets 4 and 4 in TIME_WAIT", e.Details)
		}
	}
}

// A second client behind the same address reusing a source port whose
// connection is still in TIME_WAIT on the server, with an older timestamp
// clock: its SYNs fail the PAWS check. rfc1337 keeps the TIME_WAIT socket
// alive through the resets its own duplicate ACKs draw.
func TestPawsRejectTimeWait(t *testing.T) {
	requireEvents(t, "paws_reject")
	chosen := requireTimeWaitPaws(t)
	ns := newNetns(t)
	ns.sysctl("net.ipv4.tcp_rfc1337", "1")
	// 6.16 gave TIME_WAIT rejects a counter of their own; before, PAWSEstab.
	counter := "PAWSTimewait"
	if _, ok := ns.netstat()[counter]; !ok {
		counter = "PAWSEstab"
	}
	tr := startTracer(t, connEvents...)
	h := startHelper(t, ns, "pawssyn", 0, helperCountEnv+"=3")
	before := ns.netstat()
	res := h.run()
	delta := counterDelta(before, ns.netstat(), counter)
	stopAll(t, tr)

	evs := tr.eventsFor("paws_reject", 0)
	t.Logf("helper %v, counters %v, path %s:\n%s", res, delta, chosen, dump(evs))
	if got := sumCounts(evs); got != delta[counter] || got != 3 {
		t.Fatalf("%s moved by %d; tcptrace: %d paws_reject, want 3; stderr:\n%s", counter, delta[counter], got, tr.stderrText())
	}
	cport, _ := strconv.Atoi(res["cport"])
	tsval, _ := strconv.ParseFloat(res["tsval"], 64)
	for _, e := range evs {
		if e.PID != h.PID || e.LPort != h.Port || e.RPort != cport || e.RAddr != "127.0.0.1" || e.Reason != "timewait_paws" {
			t.Errorf("unexpected paws_reject (listener pid %d port %d, client port %d): %s", h.PID, h.Port, cport, dump([]event{e}))
		}
		if r, _ := e.Details["drop_reason"].(string); (r != "TCP_RFC7323_TW_PAWS" && !strings.HasPrefix(r, "none (TIME_WAIT before 6.16")) || e.Details["syn"] != true || e.Details["state"] != "TIME_WAIT" {
			t.Errorf("details %v", e.Details)
		}
		if got := detail(e, "tsval"); got < tsval || got > tsval+2 {
			t.Errorf("tsval %v, the SYNs carried %v..%v", got, tsval, tsval+2)
		}
		if behind := detail(e, "tsval_behind_by"); behind < 99000 || behind > 101000 {
			t.Errorf("tsval_behind_by %v, the SYNs were 100000 behind the client's clock", behind)
		}
		if !strings.Contains(e.Explanation, "NAT") {
			t.Errorf("explanation lacks the NAT case: %s", e.Explanation)
		}
	}
}

// The same NAT case on a live connection: in-window data segments with a
// timestamp older than the one the server holds are discarded by PAWS
// (TCP_RFC7323_PAWS, PAWSEstab), on every kernel with drop reasons (5.19+).
func TestPawsRejectEstablished(t *testing.T) {
	requireEvents(t, "paws_reject")
	chosen, _, _ := strings.Cut(probeHooks(t, "paws_reject"), "\n")
	if strings.Contains(chosen, "TIME_WAIT only") {
		why := "no drop reasons before 5.19: only PAWS in TIME_WAIT is visible: " + chosen
		if !inMatrix() {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	ns := newNetns(t)
	tr := startTracer(t, connEvents...)
	h := startHelper(t, ns, "pawsestab", 0, helperCountEnv+"=3")
	before := ns.netstat()
	res := h.run()
	delta := counterDelta(before, ns.netstat(), "PAWSEstab", "PAWSOldAck")
	stopAll(t, tr)

	evs := tr.eventsFor("paws_reject", 0)
	t.Logf("helper %v, counters %v:\n%s", res, delta, dump(evs))
	if res["delivered"] != "0" {
		t.Fatalf("the stale segments reached the application: %v", res)
	}
	if got := sumCounts(evs); got != delta["PAWSEstab"] || got != 3 {
		t.Fatalf("PAWSEstab moved by %d; tcptrace: %d paws_reject, want 3; stderr:\n%s", delta["PAWSEstab"], got, tr.stderrText())
	}
	tsval, _ := strconv.ParseFloat(res["tsval"], 64)
	for _, e := range evs {
		if e.PID != h.PID || e.LPort != h.Port || e.RPort != h.LPort || e.Reason != "established_paws" {
			t.Errorf("unexpected paws_reject (pid %d, server port %d, client port %d): %s", h.PID, h.Port, h.LPort, dump([]event{e}))
		}
		if e.Details["drop_reason"] != "TCP_RFC7323_PAWS" || e.Details["syn"] != false {
			t.Errorf("details %v", e.Details)
		}
		if got := detail(e, "tsval"); got < tsval || got > tsval+2 {
			t.Errorf("tsval %v, the segments carried %v..%v", got, tsval, tsval+2)
		}
		// The socket's own timestamp is known where the tracepoint passes it (6.11+).
		if behind, ok := e.Details["tsval_behind_by"].(float64); ok && (behind < 99000 || behind > 101000) {
			t.Errorf("tsval_behind_by %v, the segments were 100000 behind the client's clock", behind)
		}
	}
}

// The server aborts a connection (SO_LINGER 0, with a request unread): it
// sends a reset, the client receives it in ESTABLISHED. Checked against
// OutRsts and EstabResets (both ends leave ESTABLISHED for CLOSE).
func TestResetEstablished(t *testing.T) {
	requireEvents(t, "reset")
	ns := newNetns(t)
	tr := startTracer(t, connEvents...)
	v6 := startTracer(t, append(connEvents, "-6")...)
	h := startHelper(t, ns, "reset", 0)
	port := startTracer(t, append(connEvents, "--port", strconv.Itoa(h.Port))...)
	otherPort := startTracer(t, append(connEvents, "--port", strconv.Itoa(h.Port+1))...)
	before := ns.snmp()
	res := h.run()
	delta := counterDelta(before, ns.snmp(), "OutRsts", "EstabResets")
	stopAll(t, tr, v6, port, otherPort)
	// The filters apply to connection events as to the others: -6 and
	// another port see nothing of this IPv4 connection, its port all of it.
	if evs := append(v6.eventsFor("reset", 0), otherPort.eventsFor("reset", 0)...); len(evs) != 0 {
		t.Errorf("-6 or --port %d printed:\n%s", h.Port+1, dump(evs))
	}
	if got := sumCounts(port.eventsFor("reset", h.PID)); got != 2 {
		t.Errorf("--port %d counted %d resets, want 2", h.Port, got)
	}

	evs := tr.eventsFor("reset", h.PID)
	t.Logf("helper %v, counters %v:\n%s", res, delta, dump(evs))
	if res["read_errno"] != strconv.Itoa(int(syscall.ECONNRESET)) {
		t.Fatalf("the client's read ended with errno %s, want ECONNRESET", res["read_errno"])
	}
	var sent, received []event
	for _, e := range evs {
		switch e.Reason {
		case "sent":
			sent = append(sent, e)
		case "received":
			received = append(received, e)
		}
	}
	if sumCounts(sent) != delta["OutRsts"] || sumCounts(sent) != 1 || sumCounts(received) != 1 || delta["EstabResets"] != 2 {
		t.Fatalf("%d sent (OutRsts moved by %d), %d received (EstabResets moved by %d); stderr:\n%s",
			len(sent), delta["OutRsts"], len(received), delta["EstabResets"], tr.stderrText())
	}
	if s := sent[0]; s.LPort != h.Port || s.RPort != h.LPort || detail(s, "unread_bytes") != 32 || !strings.Contains(s.Explanation, "32 bytes unread") {
		t.Errorf("unexpected sent reset (server port %d, client port %d): %s %v", h.Port, h.LPort, dump(sent), s.Details)
	}
	if r := received[0]; r.LPort != h.LPort || r.RPort != h.Port || r.Details["state"] != "ESTABLISHED" {
		t.Errorf("unexpected received reset: %s %v", dump(received), r.Details)
	}
}

// inMatrix: the VM matrix, where a kernel may lack what a test needs.
func inMatrix() bool { return forcePath != "" || os.Getenv("TCPTRACE_E2E_KERNEL_MATRIX") != "" }

// requireTimeWaitPaws skips (in the kernel matrix only) where the chosen
// paws_reject path cannot see a TIME_WAIT socket's rejects; it returns the
// path's line of --list-probes.
func requireTimeWaitPaws(t *testing.T) string {
	t.Helper()
	chosen, _, _ := strings.Cut(probeHooks(t, "paws_reject"), "\n")
	if strings.Contains(chosen, "not in TIME_WAIT") {
		why := "before 6.16 a TIME_WAIT PAWS reject has no drop reason, and this path reads drop reasons only: " + chosen
		if !inMatrix() {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	return chosen
}
