package e2e

import (
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

var nagleEvents = []string{"-e", "delayed_ack,nagle_stall,nagle_delack_stall", "--interval", "300ms"}

// The classic stall: a keep-alive server writes a small header and a
// small body as two writes with Nagle on; the client sends 30 requests on
// one connection. From the second or third request on, the client is in
// interactive (pingpong) mode and delays its ACK of the header; the server's
// body waits for that ACK behind Nagle: about 40 ms per request. tcptrace
// must name the stall on the server's connection, prove it with the
// client's delayed ACK, count the delayed ACKs exactly as the kernel does,
// and --pid of the client must show its delayed ACKs although they fire in
// timer context. Then the same server with TCP_NODELAY, and with one write:
// no stall, and the client's latency drops.
func TestNagleDelayedACKStall(t *testing.T) {
	requireEvents(t, "delayed_ack", "nagle_stall")
	const requests = 30
	ns := newNetns(t)
	ino := ns.inode()
	// The host-wide tracer starts before the client connects (its owner is
	// recorded at connect()); the --pid one after (the owner comes from the
	// socket iterator and /proc).
	srv := startHelper(t, ns, "kvserver", 0)
	before := ns.netstat()
	tr := startTracer(t, nagleEvents...)
	// Without delayed_ack the peer's timer is not watched: the same stalls
	// are plain nagle_stall, explained by the pure ACK that came late.
	nagleOnly := startTracer(t, "-e", "nagle_stall", "--interval", "300ms")
	kv := &kvRun{server: srv, client: startHelper(t, ns, "kvclient", 0,
		helperPortEnv+"="+strconv.Itoa(srv.Port), helperCountEnv+"="+strconv.Itoa(requests))}
	byClient := startTracer(t, "-e", "delayed_ack", "--interval", "300ms", "--pid", strconv.Itoa(kv.client.PID))
	res := kv.run()
	time.Sleep(300 * time.Millisecond) // the last response's delayed ACK
	delta := counterDelta(before, ns.netstat(), "DelayedACKs", "DelayedACKLocked")
	for _, r := range []*tracerRun{tr, byClient, nagleOnly} {
		if err := r.stop(syscall.SIGINT); err != nil {
			t.Fatalf("tcptrace: %v\n%s", err, r.stderrText())
		}
	}
	slowNagle, nagleMedian := atoi(t, res["slow"]), res["median_us"]
	t.Logf("Nagle on, two writes: %d requests, median %s µs, max %s µs, %d took >= 30 ms; counters %v",
		requests, res["median_us"], res["max_us"], slowNagle, delta)

	cl := kv.client
	stalls := tr.eventsFor("nagle_delack_stall", srv.PID)
	n := sumCounts(stalls)
	// Most requests on the host's kernel; the VM matrix's 5.10 keeps
	// TCP_PINGPONG_THRESH at 3, and a client out of pingpong mode ACKs the
	// header when it reads it (tcp_cleanup_rbuf()): fewer requests stall
	// there, and each stall must still be one the client felt.
	most := uint64(requests / 2)
	if forcePath != "" || os.Getenv("TCPTRACE_E2E_KERNEL_MATRIX") != "" {
		most = requests / 5
	}
	if n < most {
		t.Fatalf("%d nagle_delack_stall for %d requests (want most); nagle_stall:\n%sdelayed_ack:\n%sstderr:\n%s",
			n, requests, dump(tr.eventsFor("nagle_stall", 0)), dump(tr.eventsFor("delayed_ack", 0)), tr.stderrText())
	}
	var stallMs float64
	for _, e := range stalls {
		if e.LPort != srv.Port || e.RPort != cl.LPort || e.Reason != "peer_delayed_ack" {
			t.Errorf("stall on the wrong connection (server :%d, client :%d): %s", srv.Port, cl.LPort, dump([]event{e}))
		}
		if detail(e, "peer_pid") != float64(cl.PID) || e.Details["peer_comm"] == nil {
			t.Errorf("stall does not name the client (pid %d) as the peer: %v", cl.PID, e.Details)
		}
		// Each stall was ended by a delayed ACK (held 30 ms or more), but
		// a stall can be shorter than that hold: it starts when the body is
		// written, and a sender descheduled between its two writes (seen
		// under QEMU: 23 ms of a 42 ms hold) writes the body late. Nor is
		// the longest one bounded: an emulated CPU can stretch any single
		// stall. The averages, per line and over the run, are what the
		// delayed ACK decides.
		avg := detail(e, "stall_ms") / float64(e.Count)
		if avg <= 0 || avg > 250 || detail(e, "peer_held_ms") < 30 {
			t.Errorf("stall of %.1f ms on average (max %.1f ms), released by an ACK held %.1f ms: want stalls of at most 250 ms on average behind an ACK held 30 ms or more: %s",
				avg, detail(e, "max_stall_ms"), detail(e, "peer_held_ms"), dump([]event{e}))
		}
		if detail(e, "held_bytes") != kvBody {
			t.Errorf("held %v bytes, want the body's %d: %v", e.Details["held_bytes"], kvBody, e.Details)
		}
		stallMs += detail(e, "stall_ms")
	}
	if n > 0 {
		if avg := stallMs / float64(n); avg < 30 || avg > 250 {
			t.Errorf("stalls of %.1f ms on average over %d, want 30..250 ms", avg, n)
		}
	}
	// A stall is proven by its peer's delayed-ACK firing, which the
	// tracepoint path misses now and then (delackCountOK). Every stall
	// reported was felt by the client (a request of 30 ms or more); the
	// slow requests it does not explain must be few, not none: under
	// QEMU's emulation a request that did not stall can take 45 ms.
	missedACKs := 0
	if k, g := delta["DelayedACKs"], sumCounts(inNetns(tr.eventsFor("delayed_ack", 0), ino)); g < k && tracepointDelack() {
		missedACKs = int(k - g)
	}
	if int(n) > slowNagle || int(n)+missedACKs+unexplainedSlow(requests) < slowNagle {
		t.Errorf("%d stalls reported (%d delayed ACKs not seen), and %d requests took 30 ms or more", n, missedACKs, slowNagle)
	}

	// The same holds, seen without the peer's timer. A request the client
	// ACKed at once (quick-ACK mode, before pingpong) can still have its
	// body held for one round trip (6 ms measured under QEMU on 5.10): such
	// a hold is a plain nagle_stall in both runs. So: every delayed-ACK
	// stall again, plus holds that were short, together under 30 ms each
	// (the two tracers time the same holds, 1 ms of slack for each).
	plain := nagleOnly.eventsFor("nagle_stall", srv.PID)
	var plainMs float64
	for _, e := range plain {
		plainMs += detail(e, "stall_ms")
	}
	holds := sumCounts(plain)
	extra := float64(holds) - float64(n)
	// On the kprobe path the two tracers' programs share one guard per
	// CPU (bpf_prog_active), so one can be skipped while the other runs;
	// a shortfall is accepted only within the skips tcptrace reported.
	seenAll := holds >= n || countAgrees(t, "-e nagle_stall vs nagle_delack_stall", holds, n, nagleOnly.skippedRuns())
	if !seenAll || holds > requests || plainMs-stallMs > 30*extra+float64(holds) {
		t.Errorf("-e nagle_stall: %d stalls (%.0f ms), the full run %d nagle_delack_stall (%.0f ms): the %v more must be short holds:\n%s\nstderr of -e nagle_stall:\n%s",
			holds, plainMs, n, stallMs, extra, dump(plain), nagleOnly.stderrText())
	}
	for _, e := range plain {
		if e.Reason != "unacked_small_segment" || detail(e, "release_ack_payload_bytes") != 0 || e.RPort != cl.LPort {
			t.Errorf("nagle_stall not released by the client's pure ACK: %s %v", dump([]event{e}), e.Details)
		}
	}
	if len(nagleOnly.eventsFor("nagle_delack_stall", 0)) != 0 || len(nagleOnly.eventsFor("delayed_ack", 0)) != 0 {
		t.Errorf("-e nagle_stall printed other events")
	}

	// Every delayed ACK in the namespace, against the kernel's count. A
	// timer that fires while the client holds its socket is deferred to
	// tcp_release_cb() (DelayedACKLocked), which the tracepoint path does
	// not see; the handler-based paths see it.
	acks := inNetns(tr.eventsFor("delayed_ack", 0), ino)
	got := sumCounts(acks)
	locked := delta["DelayedACKLocked"]
	if !delackCountOK(t, tr, ino, got, delta["DelayedACKs"], locked) {
		t.Errorf("DelayedACKs moved by %d (DelayedACKLocked %d); tcptrace counted %d delayed_ack in the namespace:\n%sstderr:\n%s",
			delta["DelayedACKs"], locked, got, dump(acks), tr.stderrText())
	}
	var clientACKs uint64
	for _, e := range acks {
		if e.LPort == cl.LPort {
			clientACKs += e.Count
			if e.PID != cl.PID || e.Reason == "" {
				t.Errorf("client's delayed ACK attributed to pid %d (want %d): %s", e.PID, cl.PID, dump([]event{e}))
			}
		}
	}
	if clientACKs < n {
		t.Errorf("%d delayed ACKs on the client's connection for %d stalls they released", clientACKs, n)
	}
	mine := byClient.eventsFor("delayed_ack", 0)
	// Two tracers, each of which may miss a firing on the tracepoint path
	// (delackCountOK).
	if got := sumCounts(mine); got != clientACKs && !(tracepointDelack() && got+2 >= clientACKs && got <= clientACKs+2) {
		t.Errorf("--pid %d (the client) counted %d delayed ACKs, the host-wide run %d on its connection:\n%s", cl.PID, got, clientACKs, dump(mine))
	}
	for _, e := range mine {
		if e.PID != cl.PID {
			t.Errorf("--pid %d printed another process's delayed ACK: %s", cl.PID, dump([]event{e}))
		}
	}
	t.Logf("%d stalls (%.0f ms in all), %d delayed ACKs (%d on the client's connection); lines:\n%s%s",
		n, stallMs, got, clientACKs, dump(stalls), dump(acks))

	// The fixes: no stall, and the median falls from the delayed ACK's
	// 40 ms to a round trip. Not every request: under QEMU's emulation one
	// of 30 took 45 ms with TCP_NODELAY (median 2.3 ms).
	for _, fix := range []struct {
		name, env  string
		nagleHolds bool
	}{
		{"TCP_NODELAY on the server", helperNodelayEnv + "=1", false},
		{"header and body in one write", helperOneWriteEnv + "=1", false},
		{"TCP_QUICKACK on the client after each request", helperQuickackEnv + "=1", true},
	} {
		kv := startKV(t, ns, requests, fix.env)
		tr := startTracer(t, nagleEvents...)
		res := kv.run()
		if err := tr.stop(syscall.SIGINT); err != nil {
			t.Fatalf("tcptrace: %v\n%s", err, tr.stderrText())
		}
		t.Logf("%s: median %s µs, max %s µs, %d took >= 30 ms (Nagle on, two writes: median %s µs)",
			fix.name, res["median_us"], res["max_us"], atoi(t, res["slow"]), nagleMedian)
		if evs := inNetns(tr.eventsFor("nagle_delack_stall", 0), ino); len(evs) != 0 {
			t.Errorf("%s: nagle_delack_stall reported:\n%s", fix.name, dump(evs))
		}
		// With TCP_QUICKACK Nagle still holds the body, until the ACK
		// that comes at once: a round trip, never the 40 ms of a delayed
		// ACK (TCP_ATO_MIN), on average (under QEMU's emulation a round
		// trip took up to 10 ms, and a single one can take longer).
		holds := inNetns(tr.eventsFor("nagle_stall", 0), ino)
		var heldMs float64
		for _, e := range holds {
			heldMs += detail(e, "stall_ms")
		}
		if len(holds) > 0 && (!fix.nagleHolds || heldMs/float64(sumCounts(holds)) >= 30) {
			t.Errorf("%s: nagle_stall reported (%.1f ms on average):\n%s", fix.name, heldMs/float64(sumCounts(holds)), dump(holds))
		}
		if atoi(t, res["median_us"]) >= 10000 {
			t.Errorf("%s: the client still waits (median %s µs, %s requests >= 30 ms)", fix.name, res["median_us"], res["slow"])
		}
	}
}

// unexplainedSlow is how many requests of a run may take 30 ms or more for
// no reason tcptrace reports: an emulated CPU (QEMU TCG) stretches one now
// and then (45 ms against a median of 2.3 ms, measured on 6.1).
func unexplainedSlow(requests int) int { return max(1, requests/10) }

func atoi(t testing.TB, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return n
}

// The same stall over IPv6, with the -6 and --port filters: the peer's
// delayed ACK is matched by IPv6 addresses.
func TestNagleDelayedACKStallIPv6(t *testing.T) {
	requireEvents(t, "delayed_ack", "nagle_stall")
	const requests = 12
	ns := newNetns(t)
	srv := startHelper(t, ns, "kvserver", 0, helperIPv6Env+"=1")
	tr := startTracer(t, append(nagleEvents, "-6", "--port", strconv.Itoa(srv.Port))...)
	v4 := startTracer(t, append(nagleEvents, "-4")...)
	kv := &kvRun{server: srv, client: startHelper(t, ns, "kvclient", 0, helperIPv6Env+"=1",
		helperPortEnv+"="+strconv.Itoa(srv.Port), helperCountEnv+"="+strconv.Itoa(requests))}
	res := kv.run()
	for _, r := range []*tracerRun{tr, v4} {
		if err := r.stop(syscall.SIGINT); err != nil {
			t.Fatalf("tcptrace: %v\n%s", err, r.stderrText())
		}
	}
	stalls := tr.eventsFor("nagle_delack_stall", srv.PID)
	if n := sumCounts(stalls); int(n)+unexplainedSlow(requests) < atoi(t, res["slow"]) || int(n) > atoi(t, res["slow"]) || n == 0 {
		t.Fatalf("%d nagle_delack_stall over IPv6, %s slow requests; stderr:\n%s", n, res["slow"], tr.stderrText())
	}
	for _, e := range stalls {
		if e.Family != 6 || e.LAddr != "::1" || e.RPort != kv.client.LPort || detail(e, "peer_pid") != float64(kv.client.PID) {
			t.Errorf("IPv6 stall: %s %v", dump([]event{e}), e.Details)
		}
	}
	ino := ns.inode()
	for _, name := range []string{"nagle_delack_stall", "nagle_stall", "delayed_ack"} {
		if evs := inNetns(v4.eventsFor(name, 0), ino); len(evs) != 0 {
			t.Errorf("-4 printed IPv6 %s:\n%s", name, dump(evs))
		}
	}
	t.Logf("IPv6: %s requests, %s slow; lines:\n%s", res["requests"], res["slow"], dump(stalls))
}
