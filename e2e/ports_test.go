package e2e

import (
	"strconv"
	"strings"
	"testing"
)

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
