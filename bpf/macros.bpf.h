/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shorthands for what every BPF file writes the same way: a map, a per-CPU
 * counter, and a hook's fentry and kprobe programs whose body is one call.
 * Each expands to exactly what it stands for, so the object (map names and
 * BTF, program names, sections and instructions) is the same as written
 * out. A program made here keeps its name in a comment at the use, so that
 * grep finds it.
 */
#ifndef MACROS_BPF_H
#define MACROS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "tcptrace.h"

/* A map as libbpf and cilium/ebpf read it from .maps: an anonymous struct
 * whose members carry only BTF (type, entries, key and value types). The
 * members keep the order every map here was written with, so the object's
 * BTF is the same as written out. */
#define DEFINE_MAP(name, map_type, key_type, value_type, entries) \
	struct {                                                  \
		__uint(type, map_type);                           \
		__uint(max_entries, entries);                     \
		__type(key, key_type);                            \
		__type(value, value_type);                        \
	} name SEC(".maps")

/* Counters user space sums over the CPUs and reports at exit. Per CPU, so
 * that a program adds without an atomic and two CPUs never share a line. */
#define DEFINE_COUNTERS(name, entries) DEFINE_MAP(name, BPF_MAP_TYPE_PERCPU_ARRAY, __u32, __u64, entries)

/*
 * p, a pointer the kernel passed, as a number (for a hash of it): the
 * verifier allows no arithmetic on such a pointer, but what a program reads
 * back from a map value is a number. slot is in a value of this CPU's, so
 * only a program that interrupted this one on this CPU (a softirq over a
 * system call) can write it between the two; then the same number comes
 * from the stack through a helper, which no one else writes. The compare is
 * of a copy clang cannot tell from p's equal (the empty asm): compared
 * itself, v would be replaced with p where they are equal, and the pointer
 * would be what is returned.
 */
static __always_inline __u64 addr_via(__u64 *slot, __u64 p)
{
	__u64 v, w;

	*(volatile __u64 *)slot = p;
	v = *(volatile __u64 *)slot;
	w = v;
	asm volatile("" : "+r"(w));
	if (w != p)
		bpf_probe_read_kernel(&v, sizeof(v), &p);
	return v;
}

/* Add n to this CPU's counter i of a DEFINE_COUNTERS map. */
static __always_inline void counter_add(void *counters, __u32 i, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(counters, &i);

	if (c)
		*c += n;
}

static __always_inline void counter_inc(void *counters, __u32 i)
{
	counter_add(counters, i, 1);
}

/*
 * One program whose body is `call`, in which `path` is the program's probe
 * path (enum probe_path), for calls that pass it on. prog is BPF_PROG
 * (fentry, fexit: the arguments from the trampoline's array), BPF_KPROBE or
 * BPF_KRETPROBE (from pt_regs); args are the hooked function's arguments
 * the call uses, as prog reads them.
 */
#define ONE_CALL_PROG(sec, name, prog, path_value, call, args...)             \
	SEC(sec)                                                              \
	int prog(name, ##args)                                                \
	{                                                                     \
		const __u8 path __attribute__((unused)) = path_value;         \
		call;                                                         \
		return 0;                                                     \
	}

/* A tp_btf program on the tracepoint tp, named name. */
#define TP_PROG(tp, name, call, args...) ONE_CALL_PROG("tp_btf/" #tp, name, BPF_PROG, PATH_TRACEPOINT, call, ##args)

/* fentry_<fn> and kprobe_<fn>: call at fn's entry, on the fentry path and
 * on the kprobe path (kernels without BTF trampolines). The loader takes
 * the symbol a kprobe attaches to from its name (tracer/detector.go). */
#define ENTRY_PROGS(fn, call, args...)                                                    \
	ONE_CALL_PROG("fentry/" #fn, fentry_##fn, BPF_PROG, PATH_FENTRY, call, ##args)    \
	ONE_CALL_PROG("kprobe/" #fn, kprobe_##fn, BPF_KPROBE, PATH_KPROBE, call, ##args)

/* fexit_<fn> and kretprobe_<fn>: call at fn's return, for a call that needs
 * none of fn's arguments (a kretprobe sees none). */
#define RETURN_PROGS(fn, call)                                                        \
	ONE_CALL_PROG("fexit/" #fn, fexit_##fn, BPF_PROG, PATH_FENTRY, call)          \
	ONE_CALL_PROG("kretprobe/" #fn, kretprobe_##fn, BPF_KRETPROBE, PATH_KPROBE, call)

/* reason is the drop reason `name` of the running kernel. A macro: CO-RE
 * takes the enumerator's name, and the test of its existence comes first,
 * since each exists only from the version that added it: a program that
 * compares with a reason the kernel lacks then still loads (the test is a
 * constant, and the comparison dead code). */
#define IS_DROP_REASON(reason, name)                                   \
	(bpf_core_enum_value_exists(enum skb_drop_reason, name) &&     \
	 (reason) == bpf_core_enum_value(enum skb_drop_reason, name))

#endif /* MACROS_BPF_H */
