package tracer

import (
	"encoding/binary"
	"strings"
	"testing"
)

// A hand-built BTF blob: an INT, a named enum with a decoy member, a struct,
// then the anonymous enum that holds the counters.
func TestScanAnonEnums(t *testing.T) {
	strs := "\x00int\x00named\x00LINUX_MIB_DELAYEDACKS\x00s\x00f\x00LINUX_MIB_LISTENDROPS\x00"
	off := func(s string) uint32 {
		for i := 0; i+len(s) < len(strs); i++ {
			if strs[i:i+len(s)] == s && strs[i+len(s)] == 0 && (i == 0 || strs[i-1] == 0) {
				return uint32(i)
			}
		}
		t.Fatalf("no string %q", s)
		return 0
	}
	var types []byte
	u32 := func(v ...uint32) {
		for _, x := range v {
			types = binary.LittleEndian.AppendUint32(types, x)
		}
	}
	info := func(kind, vlen uint32) uint32 { return kind<<24 | vlen }
	u32(off("int"), info(btfKindInt, 0), 4, 0x20)                                                       // INT + 4
	u32(off("named"), info(btfKindEnum, 1), 4, off("LINUX_MIB_DELAYEDACKS"), 99)                        // named: ignored
	u32(off("s"), info(btfKindStruct, 1), 4, off("f"), 1, 0)                                            // STRUCT, 1 member
	u32(0, info(btfKindEnum, 2), 4, off("LINUX_MIB_LISTENDROPS"), 21, off("LINUX_MIB_DELAYEDACKS"), 30) // the one
	hdr := make([]byte, 24)
	binary.LittleEndian.PutUint16(hdr, 0xeb9f)
	hdr[2] = 1
	binary.LittleEndian.PutUint32(hdr[4:], 24)
	binary.LittleEndian.PutUint32(hdr[8:], 0)
	binary.LittleEndian.PutUint32(hdr[12:], uint32(len(types)))
	binary.LittleEndian.PutUint32(hdr[16:], uint32(len(types)))
	binary.LittleEndian.PutUint32(hdr[20:], uint32(len(strs)))
	raw := append(append(hdr, types...), strs...)

	got, err := scanAnonEnums(raw, []string{"LINUX_MIB_DELAYEDACKS", "LINUX_MIB_LISTENDROPS"})
	if err != nil {
		t.Fatal(err)
	}
	if got["LINUX_MIB_DELAYEDACKS"] != 30 || got["LINUX_MIB_LISTENDROPS"] != 21 || len(got) != 2 {
		t.Errorf("got %v", got)
	}
	if _, err := scanAnonEnums(raw[:30], nil); err == nil {
		t.Error("truncated BTF accepted")
	}
}

func TestParseKallsyms(t *testing.T) {
	const file = `0000000000000000 A fixed_percpu_data
000000000002c2c0 D runqueues
ffffffff81001000 T _stext
ffffffff81002000 t f
ffffffff81002000 t f_alias
ffffffff81002400 T g
ffffffff81003000 t tcp_delack_timer
ffffffff81003100 t h
ffffffffc0001000 t tcp_delack_timer	[some_module]
`
	k, err := parseKallsyms(strings.NewReader(file), []string{"f", "runqueues", "tcp_delack_timer", "missing"}, []string{"f"})
	if err != nil {
		t.Fatal(err)
	}
	if s, e, err := k.funcRange("f"); err != nil || s != 0x2000+0xffffffff81000000 || e != 0xffffffff81002400 {
		t.Errorf("f: %x %x %v", s, e, err)
	}
	if k.addr["runqueues"] != 0x2c2c0 {
		t.Errorf("runqueues (per-CPU offset) %x", k.addr["runqueues"])
	}
	if k.addr["tcp_delack_timer"] != 0xffffffff81003000 {
		t.Errorf("a module's symbol of the same name replaced the kernel's: %x", k.addr["tcp_delack_timer"])
	}
	if _, _, err := k.funcRange("missing"); err == nil {
		t.Error("missing symbol found")
	}
	if _, _, err := k.funcRange("tcp_delack_timer"); err == nil {
		t.Error("range of a function not asked for")
	}
}
