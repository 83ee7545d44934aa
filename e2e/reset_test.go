package e2e

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
)

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
