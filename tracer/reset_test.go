package tracer

import (
	"strings"
	"testing"
	"time"
)

func TestDecodeReset(t *testing.T) {
	d := &decoder{hz: 250, conn: &connFacts{rstReasons: map[uint32]string{3: "TCP_ABORT_ON_CLOSE"}}}
	r := sampleConnRaw(Reset)
	r.C.Side, r.C.State, r.C.Unread, r.C.RstReasonKnown, r.C.RstReason = 1, 7, 32, 1, 3
	e := d.decode(&r, tally{count: 1})
	if e.Reason != reasonResetSent || e.Details["rst_reason"] != "TCP_ABORT_ON_CLOSE" || !strings.Contains(e.Explanation, "32 bytes unread") {
		t.Errorf("reset sent: %s %v", e.Explanation, e.Details)
	}
	r.C.Side, r.C.State, r.C.RstReasonKnown = 2, 1, 0
	e = d.decode(&r, tally{count: 1})
	if e.Reason != reasonResetReceived || e.Details["rst_reason"] != nil || !strings.Contains(e.Explanation, "in state ESTABLISHED") {
		t.Errorf("reset received: %s %v", e.Explanation, e.Details)
	}
	// An aggregated line stands for every reset from the peer's address in
	// the interval: it says so instead of naming one connection.
	e = d.decode(&r, tally{count: 6})
	if !strings.Contains(e.Explanation, "reset received from 10.0.0.2:5432 and 5 more, the latest in state ESTABLISHED with") {
		t.Errorf("aggregated reset received: %s", e.Explanation)
	}
	r.C.Side, r.C.State = 1, 7
	e = d.decode(&r, tally{count: 3})
	if !strings.Contains(e.Explanation, "reset sent to 10.0.0.2:5432 and 2 more (the latest in state CLOSE)") {
		t.Errorf("aggregated reset sent: %s", e.Explanation)
	}
}

// Without an owner from the kernel, the socket's inode names one in user
// space, but only on a line of one reset: an aggregated line may cover
// sockets of several processes, and the inode is its latest socket's.
func TestDecodeResetOwnerByInode(t *testing.T) {
	d := &decoder{hz: 250, conn: &connFacts{}, owners: newInodeOwners(nil)}
	d.owners.byInode[4242] = procOwner{pid: 77, comm: "server"}
	d.owners.scanned = time.Now()
	r := sampleConnRaw(Reset)
	r.C.Side, r.C.State, r.C.Ino, r.C.OwnerKnown = 2, 1, 4242, 0
	if e := d.decode(&r, tally{count: 1}); e.PID != 77 || e.Comm != "server" || e.Details["owner_known"] != false {
		t.Errorf("one reset: pid %d %q %v, want 77 server, owner_known false", e.PID, e.Comm, e.Details["owner_known"])
	}
	if e := d.decode(&r, tally{count: 5}); e.PID != 0 || e.Comm != "" {
		t.Errorf("5 resets: pid %d %q, want no owner", e.PID, e.Comm)
	}
}
