package e2e

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// A full table of socket owners refuses new sockets rather than evicting
// live ones; where tracing programs may use socket storage (5.11+) the
// refused socket's owner goes there. The test fills the running tracer's
// table with records of sockets that do not exist, then a process makes a
// connection whose server aborts it: the reset its client receives
// (softirq) must name it from the storage; on the table alone it has no
// owner, counted in the summary, never another's. Where the kernel has
// BPF_CMPXCHG the table is sets of records in front of a hash: both are
// filled.
func TestOwnersTableFull(t *testing.T) {
	requireEvents(t, "reset")
	ns := newNetns(t)
	before, beforeSets := mapIDs(t, "owners"), mapIDs(t, "owner_sets")
	tr := startTracer(t, "-e", "reset")
	owners := newMap(t, "owners", before)
	sets := fillSets(t, newMap(t, "owner_sets", beforeSets), 1)
	filled := fillMap(t, owners)
	h := startHelper(t, ns, "reset", 0)
	res := h.run()
	stopAll(t, tr)
	if res["read_errno"] != "104" {
		t.Fatalf("the client's read ended with errno %s, want ECONNRESET", res["read_errno"])
	}
	tableOnly := tr.tableOnly()
	var received []event
	for _, e := range inNetns(tr.eventsFor("reset", 0), ns.inode()) {
		if e.Reason == "received" {
			received = append(received, e)
		}
	}
	t.Logf("%d records of made-up sockets filled the sets, %d the hash; owners in a table only: %t; resets received:\n%s", sets, filled, tableOnly, dump(received))
	if len(received) != 1 || received[0].LPort != h.LPort {
		t.Fatalf("want one reset received by the client (port %d), got:\n%s", h.LPort, dump(received))
	}
	switch e := received[0]; {
	case !tableOnly && e.PID == h.PID && e.Details["owner_known"] == true:
	case tableOnly && e.Details["owner_known"] == false && ownersUnknown(tr.stderrText()) >= 1:
	default:
		t.Errorf("reset received by pid %d (owners in a table only: %t): %s%v\nstderr:\n%s", h.PID, tableOnly, dump(received), details(received), tr.stderrText())
	}
}

// tableOnly: the tracer said at start that it keeps owners in a table only.
func (r *tracerRun) tableOnly() bool {
	return strings.Contains(r.stderrText(), "does not let tracing programs use socket storage")
}

// mapIDs: the loaded maps called name.
func mapIDs(t *testing.T, name string) map[ebpf.MapID]bool {
	ids := map[ebpf.MapID]bool{}
	var id ebpf.MapID
	for {
		next, err := ebpf.MapGetNextID(id)
		if err != nil {
			return ids
		}
		id = next
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			continue
		}
		if info, err := m.Info(); err == nil && info.Name == name {
			ids[id] = true
		}
		m.Close()
	}
}

// newMap: the one map called name loaded since before was taken.
func newMap(t *testing.T, name string, before map[ebpf.MapID]bool) *ebpf.Map {
	var found []ebpf.MapID
	for id := range mapIDs(t, name) {
		if !before[id] {
			found = append(found, id)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one new map %q, found %v", name, found)
	}
	m, err := ebpf.NewMapFromID(found[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// fillSets gives every way of every step-th set of owner_sets (from the
// first) a record of a made-up socket (odd addresses) and returns how many
// it wrote: 0 for the one set the tracer leaves unused on a kernel without
// BPF_CMPXCHG, which it would not show.
func fillSets(t *testing.T, m *ebpf.Map, step uint32) int {
	if m.MaxEntries() == 1 {
		return 0
	}
	const ways = 4
	value := make([]byte, m.ValueSize())
	n := 0
	for i := uint32(0); i < m.MaxEntries(); i += step {
		for w := 0; w < ways; w++ {
			binary.LittleEndian.PutUint64(value[8*w:], uint64(2*n+1))
			n++
		}
		if err := m.Update(i, value, ebpf.UpdateAny); err != nil {
			t.Fatalf("filling set %d of owner_sets: %v", i, err)
		}
	}
	return n
}

// fillMap puts records under made-up keys (odd numbers: no socket is at an
// odd address) until the map refuses one for being full, and returns how
// many it took.
func fillMap(t *testing.T, m *ebpf.Map) int {
	value := make([]byte, m.ValueSize())
	for i := 0; i <= int(m.MaxEntries()); i++ {
		err := m.Update(uint64(2*i+1), value, ebpf.UpdateNoExist)
		if errors.Is(err, ebpf.ErrKeyExist) {
			continue
		}
		if err != nil {
			if i < int(m.MaxEntries())/2 {
				t.Fatalf("filling the map after %d records: %v", i, err)
			}
			return i
		}
	}
	t.Fatalf("the map took %d records, more than its %d entries", m.MaxEntries()+1, m.MaxEntries())
	return 0
}
