package tracer

import (
	"testing"

	"github.com/cilium/ebpf/asm"
)

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

func TestOwnersSizes(t *testing.T) {
	for _, c := range []struct {
		records uint32
		sets    bool
		want    ownerSizes
	}{
		{ownersFloor, true, ownerSizes{sets: 16384, shift: 50, hash: 8192}},
		{2 * 96010, true, ownerSizes{sets: 65536, shift: 48, hash: 24002}},
		{ownersCeiling, true, ownerSizes{sets: 1 << 20, shift: 44, hash: 1 << 19}},
		{ownersFloor, false, ownerSizes{sets: 1, shift: 63, hash: ownersFloor}},
	} {
		got := ownersSizes(c.records, c.sets)
		if got != c.want {
			t.Errorf("%d records, sets %t: %+v, want %+v", c.records, c.sets, got, c.want)
		}
		if c.sets && (uint64(got.sets)*ownerWays < uint64(c.records) || 1<<(64-got.shift) != uint64(got.sets)) {
			t.Errorf("%d records: %d sets of %d, shift %d: too few, or the shift does not index them", c.records, got.sets, ownerWays, got.shift)
		}
	}
}

// The programs as a kernel without BPF_CMPXCHG loads them: none left, the
// same number of instructions, and only the sets' claims replaced.
func TestWithoutCmpxchg(t *testing.T) {
	spec, err := loadTcptrace()
	if err != nil {
		t.Fatal(err)
	}
	sizes := map[string]int{}
	for name, p := range spec.Programs {
		sizes[name] = len(p.Instructions)
	}
	n := withoutCmpxchg(spec)
	if n == 0 {
		t.Fatal("no BPF_CMPXCHG found: the owner sets claim their ways with it")
	}
	claims := 0
	for name, p := range spec.Programs {
		if len(p.Instructions) != sizes[name] {
			t.Errorf("%s: %d instructions, was %d", name, len(p.Instructions), sizes[name])
		}
		for _, ins := range p.Instructions {
			if ins.OpCode.AtomicOp() == asm.CmpXchg {
				t.Errorf("%s: a BPF_CMPXCHG is left: %v", name, ins)
			}
			if ins.OpCode == asm.Mov.Op(asm.ImmSource) && ins.Dst == asm.R0 && ins.Constant == -1 {
				claims++
			}
		}
	}
	if claims < n {
		t.Errorf("%d replaced, %d r0 = -1 found", n, claims)
	}
	t.Logf("%d BPF_CMPXCHG replaced", n)
}
