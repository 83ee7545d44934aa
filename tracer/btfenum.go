package tracer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

// anonEnumValues finds the values of the named enumerators in the anonymous
// enums of a raw BTF blob (/sys/kernel/btf/vmlinux). The SNMP counter enum
// (LINUX_MIB_*) has no name, so no index leads to it; decoding every type
// of the kernel's BTF to find it took 150 to 220 ms of tcptrace's start-up,
// while walking the raw records takes a few milliseconds. Layout:
// include/uapi/linux/btf.h.
func anonEnumValues(path string, names []string) (map[string]int64, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return scanAnonEnums(raw, names)
}

const (
	btfKindInt      = 1
	btfKindArray    = 3
	btfKindStruct   = 4
	btfKindUnion    = 5
	btfKindEnum     = 6
	btfKindFuncProt = 13
	btfKindVar      = 14
	btfKindDatasec  = 15
	btfKindDeclTag  = 17
	btfKindEnum64   = 19
)

func scanAnonEnums(raw []byte, names []string) (map[string]int64, error) {
	le := binary.LittleEndian
	if len(raw) < 24 || le.Uint16(raw) != 0xeb9f {
		return nil, errors.New("not little-endian BTF")
	}
	hdrLen := le.Uint32(raw[4:])
	typeOff, typeLen := le.Uint32(raw[8:]), le.Uint32(raw[12:])
	strOff, strLen := le.Uint32(raw[16:]), le.Uint32(raw[20:])
	if uint64(hdrLen)+uint64(typeOff)+uint64(typeLen) > uint64(len(raw)) ||
		uint64(hdrLen)+uint64(strOff)+uint64(strLen) > uint64(len(raw)) {
		return nil, errors.New("BTF sections out of bounds")
	}
	types := raw[hdrLen+typeOff : hdrLen+typeOff+typeLen]
	strs := raw[hdrLen+strOff : hdrLen+strOff+strLen]
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	name := func(off uint32) string {
		if int(off) >= len(strs) {
			return ""
		}
		s := strs[off:]
		if i := bytes.IndexByte(s, 0); i >= 0 {
			s = s[:i]
		}
		return string(s)
	}
	out := map[string]int64{}
	for p := 0; p+12 <= len(types); {
		nameOff, info := le.Uint32(types[p:]), le.Uint32(types[p+4:])
		kind, vlen := (info>>24)&0x1f, int(info&0xffff)
		p += 12
		var extra int
		switch kind {
		case btfKindInt, btfKindVar, btfKindDeclTag:
			extra = 4
		case btfKindArray:
			extra = 12
		case btfKindStruct, btfKindUnion, btfKindDatasec, btfKindEnum64:
			extra = 12 * vlen
		case btfKindEnum, btfKindFuncProt:
			extra = 8 * vlen
		}
		if p+extra > len(types) {
			return nil, fmt.Errorf("truncated BTF type record at offset %d", p-12)
		}
		if kind == btfKindEnum && nameOff == 0 {
			for i := 0; i < vlen; i++ {
				e := types[p+8*i:]
				if n := name(le.Uint32(e)); want[n] {
					out[n] = int64(int32(le.Uint32(e[4:])))
				}
			}
			if len(out) == len(want) {
				return out, nil
			}
		}
		p += extra
	}
	return out, nil
}
