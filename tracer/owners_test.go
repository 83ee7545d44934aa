package tracer

import "testing"

func TestParseSockstatAlloc(t *testing.T) {
	in := "sockets: used 290\nTCP: inuse 96004 orphan 0 tw 3 alloc 96010 mem 12\nUDP: inuse 2 mem 1\n"
	if n, ok := parseSockstatAlloc(in); !ok || n != 96010 {
		t.Errorf("got %d %v, want 96010", n, ok)
	}
	if _, ok := parseSockstatAlloc("UDP: inuse 2 mem 1\n"); ok {
		t.Error("no TCP line: want not ok")
	}
}

func TestOwnersTableSize(t *testing.T) {
	for _, c := range []struct {
		sockets uint64
		want    uint32
	}{
		{0, ownersFloor},
		{1000, ownersFloor},
		{96010, 2 * 96010},
		{1 << 30, ownersCeiling},
	} {
		if got := ownersTableSize(c.sockets); got != c.want {
			t.Errorf("%d sockets: %d, want %d", c.sockets, got, c.want)
		}
	}
}
