package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// kernelFacts is what the listener detector needs to know about the running
// kernel beyond CO-RE: addresses from /proc/kallsyms and values that only
// the kernel's BTF holds by name.
type kernelFacts struct {
	rspStart, rspEnd uint64 // tcp_rcv_state_process's text
	mib              map[string]uint32
	pcpuRunqueues    uint64 // offsets in the per-CPU section (BTF .data..percpu)
	pcpuFwAlloc      uint64
	listenOverflow   bool   // SKB_DROP_REASON_TCP_LISTEN_OVERFLOW exists (6.15+)
	synRecvNargs     uint32 // arguments of tcp_v4_syn_recv_sock (6, or 7 with opt_child_init)
	consumeLocation  bool   // skb:consume_skb passes the caller's address (6.3+)
	delackTimer      uint64 // tcp_delack_timer(), the delayed-ACK timer's callback (static)
	// err says why the counters cannot be read per CPU; the SYN detector
	// is unavailable on its counter-based paths then.
	err error
	// conn: for the connection set-up and teardown detectors (connect_kernel.go).
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
	f.rspStart, f.rspEnd, err = ksyms.funcRange("tcp_rcv_state_process")
	if err != nil {
		f.err = err
	}
	return f
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

// kallsyms is what tcptrace needs from /proc/kallsyms, read in one pass
// (the file is generated on each read: about 50 ms for 200k symbols). Root
// reads real addresses (kptr_restrict allows CAP_SYSLOG).
type kallsyms struct {
	addr map[string]uint64 // wanted symbols, of any kind
	text []uint64          // sorted addresses of text symbols, for function ends
}

// kallsymsNames is every symbol tcptrace looks up: one pass finds them all.
var kallsymsNames = []string{"runqueues", "tcp_delack_timer", "tcp_rcv_state_process", "tw_timer_handler"}

var (
	ksymsOnce sync.Once
	ksyms     *kallsyms
	ksymsErr  error
)

// kernelSymbols reads /proc/kallsyms once per process.
func kernelSymbols() (*kallsyms, error) {
	ksymsOnce.Do(func() { ksyms, ksymsErr = readKallsyms(kallsymsNames...) })
	return ksyms, ksymsErr
}

// kallsymsAddr returns the address of one of kallsymsNames.
func kallsymsAddr(name string) (uint64, error) {
	k, err := kernelSymbols()
	if err != nil {
		return 0, err
	}
	if a := k.addr[name]; a != 0 {
		return a, nil
	}
	return 0, fmt.Errorf("%s not in /proc/kallsyms (or addresses hidden)", name)
}

func readKallsyms(wanted ...string) (*kallsyms, error) {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	k := &kallsyms{addr: map[string]uint64{}}
	want := map[string]bool{}
	for _, w := range wanted {
		want[w] = true
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue
		}
		text := fields[1] == "t" || fields[1] == "T"
		named := len(fields) == 3 && want[fields[2]] // not a module's symbol
		if !text && !named {
			continue
		}
		a, err := strconv.ParseUint(fields[0], 16, 64)
		if err != nil {
			continue
		}
		if named {
			k.addr[fields[2]] = a
		}
		if text && a != 0 {
			k.text = append(k.text, a)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	sort.Slice(k.text, func(i, j int) bool { return k.text[i] < k.text[j] })
	return k, nil
}

// funcRange returns a function's start and the next text symbol's address.
func (k *kallsyms) funcRange(name string) (start, end uint64, err error) {
	start = k.addr[name]
	if start == 0 {
		return 0, 0, fmt.Errorf("%s not in /proc/kallsyms (or addresses hidden)", name)
	}
	i := sort.Search(len(k.text), func(i int) bool { return k.text[i] > start })
	if i == len(k.text) {
		return 0, 0, fmt.Errorf("no symbol after %s in /proc/kallsyms", name)
	}
	return start, k.text[i], nil
}

// setKernelFacts writes the facts into the object's constants.
func setKernelFacts(spec *ebpf.CollectionSpec, f *kernelFacts) error {
	vars := map[string]any{
		"cfg_rsp_start":         f.rspStart,
		"cfg_rsp_end":           f.rspEnd,
		"mib_listen_overflows":  f.mib["LINUX_MIB_LISTENOVERFLOWS"],
		"mib_listen_drops":      f.mib["LINUX_MIB_LISTENDROPS"],
		"mib_reqq_full_drop":    f.mib["LINUX_MIB_TCPREQQFULLDROP"],
		"mib_reqq_full_cookies": f.mib["LINUX_MIB_TCPREQQFULLDOCOOKIES"],
		"mib_delayed_acks":      f.mib["LINUX_MIB_DELAYEDACKS"],
		"cfg_delack_fn":         f.delackTimer,
		"pcpu_runqueues_off":    f.pcpuRunqueues,
		"pcpu_fw_alloc_off":     f.pcpuFwAlloc,
		"cfg_mib_ok":            boolByte(f.err == nil),
	}
	for name, v := range vars {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("BPF object has no variable %s", name)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("setting %s: %w", name, err)
		}
	}
	return nil
}
