package tracer

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf/btf"
)

// kernelFacts is what detectors need to know about the running kernel beyond
// CO-RE, read once for all of them (detector.needs): addresses from
// /proc/kallsyms and values that only the kernel's BTF holds by name. The
// listen detector reads most of them (function ranges, hook prototypes),
// the delack detector its timer's callback; both read the kernel's SNMP
// counters per CPU, through the MIB indexes and per-CPU offsets. The
// connection detectors' own facts are in conn (conn_kernel.go).
type kernelFacts struct {
	rspStart, rspEnd uint64 // tcp_rcv_state_process's text
	// cookie_v4_check's and cookie_v6_check's text (zero: not in
	// /proc/kallsyms: no CONFIG_SYN_COOKIES, or IPv6 built as a module).
	cookie4Start, cookie4End uint64
	cookie6Start, cookie6End uint64
	mib                      map[string]uint32
	pcpuRunqueues            uint64 // offsets in the per-CPU section (BTF .data..percpu)
	pcpuFwAlloc              uint64
	listenOverflow           bool   // SKB_DROP_REASON_TCP_LISTEN_OVERFLOW exists (6.15+)
	synRecvNargs             uint32 // arguments of tcp_v4_syn_recv_sock (6, or 7 with opt_child_init)
	consumeLocation          bool   // skb:consume_skb passes the caller's address (6.3+)
	delackTimer              uint64 // tcp_delack_timer(), the delayed-ACK timer's callback (static)
	// err says why the counters cannot be read per CPU; the paths that
	// judge by them (listen, delack: needCounters) are unavailable then.
	err  error
	conn *connFacts
}

var mibNames = []string{
	"LINUX_MIB_LISTENOVERFLOWS", "LINUX_MIB_LISTENDROPS",
	"LINUX_MIB_TCPREQQFULLDROP", "LINUX_MIB_TCPREQQFULLDOCOOKIES",
	"LINUX_MIB_DELAYEDACKS",
}

func readKernelFacts(kernelBTF *btf.Cache) *kernelFacts {
	f := &kernelFacts{mib: map[string]uint32{}}
	spec, err := kernelBTF.Kernel()
	if err != nil {
		f.err = fmt.Errorf("reading kernel BTF: %w", err)
		return f
	}
	f.listenOverflow = enumHas(spec, "skb_drop_reason", "SKB_DROP_REASON_TCP_LISTEN_OVERFLOW")
	f.consumeLocation = tracepointArgs(spec, "btf_trace_consume_skb") >= 3
	f.synRecvNargs = 6
	var fn *btf.Func
	if spec.TypeByName("tcp_v4_syn_recv_sock", &fn) == nil {
		if proto, ok := fn.Type.(*btf.FuncProto); ok {
			f.synRecvNargs = uint32(len(proto.Params))
		}
	}
	// The linux_mib enum is anonymous: find it by its members.
	vals, err := anonEnumValues("/sys/kernel/btf/vmlinux", mibNames)
	if err != nil {
		f.err = fmt.Errorf("reading kernel BTF: %w", err)
		return f
	}
	for n, v := range vals {
		f.mib[n] = uint32(v)
	}
	if len(f.mib) != len(mibNames) {
		f.err = errors.New("the kernel's BTF lacks the LINUX_MIB counters")
		return f
	}
	var ds *btf.Datasec
	if err := spec.TypeByName(".data..percpu", &ds); err == nil {
		for _, v := range ds.Vars {
			switch v.Type.TypeName() {
			case "runqueues":
				f.pcpuRunqueues = uint64(v.Offset)
			case "tcp_memory_per_cpu_fw_alloc":
				f.pcpuFwAlloc = uint64(v.Offset)
			}
		}
	}
	ksyms, kerr := kernelSymbols()
	if kerr != nil {
		f.err = fmt.Errorf("reading /proc/kallsyms: %w", kerr)
		return f
	}
	if f.pcpuRunqueues == 0 {
		// Older pahole left per-CPU variables out of BTF (5.10). Those
		// kernels have zero-based x86-64 per-CPU symbols, and kallsyms
		// lists them (CONFIG_KALLSYMS_ALL) with their offset as address.
		if a := ksyms.addr["runqueues"]; a != 0 && a < 1<<32 {
			f.pcpuRunqueues = a
		}
	}
	if f.pcpuRunqueues == 0 {
		f.err = errors.New("the per-CPU offset of runqueues is neither in the kernel's BTF (.data..percpu) nor in /proc/kallsyms")
		return f
	}
	// A static function: not in BTF's reach for tp_btf programs, but
	// /proc/kallsyms lists it, and a timer's ->function holds this address.
	f.delackTimer = ksyms.addr["tcp_delack_timer"]
	f.cookie4Start, f.cookie4End, _ = ksyms.funcRange("cookie_v4_check")
	f.cookie6Start, f.cookie6End, _ = ksyms.funcRange("cookie_v6_check")
	f.rspStart, f.rspEnd, err = ksyms.funcRange("tcp_rcv_state_process")
	if err != nil {
		f.err = err
	}
	return f
}

func needCounters(f *kernelFacts) error {
	if f.err != nil {
		return fmt.Errorf("cannot read the SNMP counters per CPU: %w", f.err)
	}
	return nil
}

// needCountersAt: the per-CPU SNMP counters and a kernel function's address
// from /proc/kallsyms (addr, zero when not found: missing says which and
// what it is for), which several paths need together.
func needCountersAt(f *kernelFacts, addr uint64, missing string) error {
	if err := needCounters(f); err != nil {
		return err
	}
	if addr == 0 {
		return errors.New(missing)
	}
	return nil
}

// tracepointArgs counts the arguments a BTF tracepoint passes (its typedef's
// prototype, the first being the probe's data pointer), 0 if not found.
func tracepointArgs(spec *btf.Spec, typedef string) int {
	var td *btf.Typedef
	if spec.TypeByName(typedef, &td) != nil {
		return 0
	}
	ptr, ok := td.Type.(*btf.Pointer)
	if !ok {
		return 0
	}
	proto, ok := ptr.Target.(*btf.FuncProto)
	if !ok {
		return 0
	}
	return len(proto.Params)
}

func enumHas(spec *btf.Spec, enum, value string) bool {
	var e *btf.Enum
	if spec.TypeByName(enum, &e) != nil {
		return false
	}
	for _, v := range e.Values {
		if v.Name == value {
			return true
		}
	}
	return false
}

// setKernelFacts writes the facts into the object's constants.
func setKernelFacts(v *tcptraceVariableSpecs, f *kernelFacts) error {
	return set(
		setting{v.CfgRspStart, f.rspStart},
		setting{v.CfgRspEnd, f.rspEnd},
		setting{v.CfgCookie4Start, f.cookie4Start},
		setting{v.CfgCookie4End, f.cookie4End},
		setting{v.CfgCookie6Start, f.cookie6Start},
		setting{v.CfgCookie6End, f.cookie6End},
		setting{v.MibListenOverflows, f.mib["LINUX_MIB_LISTENOVERFLOWS"]},
		setting{v.MibListenDrops, f.mib["LINUX_MIB_LISTENDROPS"]},
		setting{v.MibReqqFullDrop, f.mib["LINUX_MIB_TCPREQQFULLDROP"]},
		setting{v.MibReqqFullCookies, f.mib["LINUX_MIB_TCPREQQFULLDOCOOKIES"]},
		setting{v.MibDelayedAcks, f.mib["LINUX_MIB_DELAYEDACKS"]},
		setting{v.CfgDelackFn, f.delackTimer},
		setting{v.PcpuRunqueuesOff, f.pcpuRunqueues},
		setting{v.PcpuFwAllocOff, f.pcpuFwAlloc},
		setting{v.CfgMibOk, boolByte(f.err == nil)},
	)
}
