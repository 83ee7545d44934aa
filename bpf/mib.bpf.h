/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Reading the network namespace's SNMP counters (/proc/net/netstat) of this
 * CPU from BPF. The kernel bumps them per CPU with bottom halves off while
 * it handles a packet or a timer, so the difference of this CPU's counter
 * before and after a handler says which branch the handler took: the
 * listener detector tells dropped SYNs apart this way, the delayed-ACK
 * detector tells a timer that sent an ACK from one that found nothing to do.
 */
#ifndef MIB_BPF_H
#define MIB_BPF_H

#include "common.bpf.h"

/*
 * This CPU's per-CPU offset, which BPF has no helper for: this CPU's struct
 * rq (current task's cfs_rq->rq, a relocated per-CPU address) minus the
 * unrelocated address of the per-CPU variable runqueues. That address is
 * the per-CPU section's link address (0 where x86-64 per-CPU is zero-based;
 * a kernel address on 6.15+) plus runqueues' offset in the section (BTF
 * .data..percpu). The link address comes from tcp_prot.per_cpu_fw_alloc
 * (6.0+), which points at the unrelocated per-CPU tcp_memory_per_cpu_fw_alloc.
 */
const volatile __u64 pcpu_runqueues_off = 0;
const volatile __u64 pcpu_fw_alloc_off = 0;
const volatile __u8 cfg_mib_ok = 0; /* user space found all of the above */

/* This CPU's offset, once computed (it never changes). */
DEFINE_MAP(cpu_offset, BPF_MAP_TYPE_PERCPU_ARRAY, __u32, __u64, 1);

static __always_inline bool this_cpu_off(struct sock *tcp_sk, __u64 *off)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u32 zero = 0;
	__u64 *cached = bpf_map_lookup_elem(&cpu_offset, &zero);
	struct cfs_rq *cfs;
	__u64 rq, base = 0;

	if (cached && *cached) {
		*off = *cached;
		return true;
	}
	cfs = BPF_CORE_READ(task, se.cfs_rq);
	if (!cfs)
		return false;
	if (bpf_core_field_exists(cfs->rq))
		rq = (__u64)BPF_CORE_READ(cfs, rq);
	else /* !CONFIG_FAIR_GROUP_SCHED: the cfs_rq is the one in struct rq */
		rq = (__u64)cfs - bpf_core_field_offset(struct rq, cfs);
	if (bpf_core_field_exists(struct proto, per_cpu_fw_alloc)) {
		base = (__u64)BPF_CORE_READ(tcp_sk, __sk_common.skc_prot, per_cpu_fw_alloc);
		if (!base)
			return false;
		base -= pcpu_fw_alloc_off;
	}
	*off = rq - (base + pcpu_runqueues_off);
	if (cached)
		*cached = *off;
	return true;
}

/* Where this CPU's counters of net start (its struct linux_mib), into
 * *mibs. tcp_sk is any TCP socket (for the anchor). */
static __always_inline bool this_cpu_mibs(struct net *net, struct sock *tcp_sk, __u64 *mibs)
{
	__u64 off, base;

	if (!cfg_mib_ok || !this_cpu_off(tcp_sk, &off))
		return false;
	base = (__u64)BPF_CORE_READ(net, mib.net_statistics);
	if (!base)
		return false;
	*mibs = base + off;
	return true;
}

static __always_inline __u64 mib_read(__u64 mibs, __u32 idx)
{
	__u64 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), (void *)(mibs + (__u64)idx * 8));
	return v;
}

/* Counters idx and idx + 1 in one read. */
static __always_inline void mib_read_pair(__u64 mibs, __u32 idx, __u64 *first, __u64 *second)
{
	__u64 v[2] = {};

	bpf_probe_read_kernel(v, sizeof(v), (void *)(mibs + (__u64)idx * 8));
	*first = v[0];
	*second = v[1];
}

#endif /* MIB_BPF_H */
