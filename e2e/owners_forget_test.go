package e2e

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// Owner records go with their sockets: a table that kept the record of a
// closed socket would name its owner for the next socket at the same
// address. The test fills every other set of owner_sets with made-up
// records (odd addresses), so that about half its connections' records go
// to the sets and half spill into the owners hash, and counts the
// records of real sockets (even addresses) in both: after its connections
// close, no more than before they were made. Without BPF_CMPXCHG every
// record is in the hash.
func TestOwnersGoWithSockets(t *testing.T) {
	requireEvents(t, "reset")
	const conns = 1500 // two files each: within a hard limit of 4,096
	before, beforeSets := mapIDs(t, "owners"), mapIDs(t, "owner_sets")
	tr := startTracer(t, "-e", "reset")
	owners, sets := newMap(t, "owners", before), newMap(t, "owner_sets", beforeSets)
	useSets := sets.MaxEntries() > 1
	if useSets {
		fillSets(t, sets, 2)
	}
	count := func() (inSets, inHash int) {
		return realRecordsInSets(t, sets, useSets), realRecordsInHash(t, owners)
	}
	sets0, hash0 := count()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var clients, accepted []net.Conn
	for i := 0; i < conns; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		a, err := ln.Accept()
		if err != nil {
			t.Fatalf("accept %d: %v", i, err)
		}
		clients, accepted = append(clients, c), append(accepted, a)
	}
	sets1, hash1 := count()
	// The server's ends first: the clients then close from CLOSE_WAIT and
	// reach CLOSE at the peer's ACK, not after a FIN_WAIT2 timeout.
	for _, a := range accepted {
		a.Close()
	}
	time.Sleep(200 * time.Millisecond)
	for _, c := range clients {
		c.Close()
	}
	ln.Close()
	var sets2, hash2 int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		sets2, hash2 = count()
		if sets2+hash2 <= sets0+hash0 || time.Now().After(deadline) {
			break
		}
	}
	stopAll(t, tr)
	t.Logf("records of real sockets (sets, hash): before %d, %d; with %d connections open %d, %d; after they closed %d, %d",
		sets0, hash0, conns, sets1, hash1, sets2, hash2)
	// The host's other sockets come and go meanwhile: a few either way.
	const slack = 20
	if made := sets1 + hash1 - sets0 - hash0; made < conns-slack {
		t.Fatalf("%d records made for %d connections (their clients' sockets), want about %d", made, conns, conns)
	}
	if useSets && (hash1-hash0 < conns/4 || sets1-sets0 < conns/4) {
		t.Errorf("records of %d connections with every other set full: %d in the sets, %d in the hash; want about half in each", conns, sets1-sets0, hash1-hash0)
	}
	if sets2+hash2 > sets0+hash0+slack {
		t.Errorf("%d records of closed sockets left behind (sets %d -> %d, hash %d -> %d)", sets2+hash2-sets0-hash0, sets0, sets2, hash0, hash2)
	}
}

// realRecordsInSets counts the ways of owner_sets that hold a socket's
// record (an even address; made-up ones are odd).
func realRecordsInSets(t *testing.T, m *ebpf.Map, used bool) int {
	if !used {
		return 0
	}
	var key uint32
	value := make([]byte, m.ValueSize())
	n := 0
	it := m.Iterate()
	for it.Next(&key, &value) {
		for w := 0; w < 4; w++ {
			if a := binary.LittleEndian.Uint64(value[8*w:]); a != 0 && a%2 == 0 {
				n++
			}
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// realRecordsInHash counts the owners hash's records of sockets (even
// addresses).
func realRecordsInHash(t *testing.T, m *ebpf.Map) int {
	var key uint64
	value := make([]byte, m.ValueSize())
	n := 0
	it := m.Iterate()
	for it.Next(&key, &value) {
		if key%2 == 0 {
			n++
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}
