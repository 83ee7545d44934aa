/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The listener detector's counter baselines (listen.bpf.h), taken once
 * just after its SYN programs are attached, by two programs user space
 * runs itself (BPF_PROG_TEST_RUN) rather than attaches: so that the first
 * SYN a CPU handles in a namespace is judged by the counters like any
 * other, and a namespace made later is known to have started at zero.
 */
#include "common.bpf.h"
#include "listen.bpf.h"

/*
 * Run by user space (BPF_PROG_TEST_RUN) on each CPU in turn, pinned there,
 * once per namespace, just after the SYN programs are attached: this CPU's
 * counters of the namespace of the socket at file descriptor args[0] of the
 * calling thread become its baseline. Returns 1 when it took one.
 */
SEC("raw_tp")
int mib_baseline_init(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	__u64 fd = ctx->args[0], key;
	struct file **fds, *f = NULL;
	struct mibs now, *base;
	struct socket *sock;
	struct net *net;
	struct sock *sk;

	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	sock = f ? BPF_CORE_READ(f, private_data) : NULL;
	sk = sock ? BPF_CORE_READ(sock, sk) : NULL;
	if (!sk)
		return 0;
	net = BPF_CORE_READ(sk, __sk_common.skc_net.net);
	if (!read_mibs(net, sk, &now))
		return 0;
	key = (__u64)net;
	base = bpf_map_lookup_elem(&mib_baseline, &key);
	/* A SYN may have made this CPU's slot already: it is newer. */
	if (!base || !base->valid)
		mib_store(net, base, &now);
	return 1;
}

struct nets_walk {
	__u64 first; /* the list node the walk started from */
	__u64 node;
	__u64 off;   /* of the list node in struct net */
	bool complete;
	bool full;
};

static long nets_walk_step(__u32 i, struct nets_walk *w)
{
	__u64 next = 0, net;
	__u8 one = 1;

	if (bpf_probe_read_kernel(&next, sizeof(next), (void *)w->node) || !next)
		return 1;
	if (next == w->first) {
		w->complete = true;
		return 1;
	}
	/* The list's head, net_namespace_list, is no namespace: its entry
	 * is an address no struct net has, and never matches. */
	net = next - w->off;
	if (bpf_map_update_elem(&mib_nets, &net, &one, BPF_ANY)) {
		w->full = true;
		return 1;
	}
	w->node = next;
	return 0;
}

/*
 * Run once by user space (BPF_PROG_TEST_RUN) after the SYN programs are
 * attached: every namespace on the kernel's list (net->list, a ring through
 * net_namespace_list, walked from the calling thread's own namespace, so
 * no address of the list's head is needed) goes into mib_nets. RCU keeps a
 * namespace unlinked meanwhile walkable. Returns 1 when the whole ring fit.
 */
SEC("raw_tp")
int mib_known_nets(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct net *net = BPF_CORE_READ(task, nsproxy, net_ns);
	struct nets_walk w = {};
	__u32 zero = 0, *complete;
	__u64 key = (__u64)net;
	__u8 one = 1;

	if (!net || bpf_map_update_elem(&mib_nets, &key, &one, BPF_ANY))
		return 0;
	w.off = bpf_core_field_offset(struct net, list);
	w.first = key + w.off;
	w.node = w.first;
	bpf_loop(MIB_NETS_MAX, nets_walk_step, &w, 0);
	if (!w.complete || w.full)
		return 0;
	complete = bpf_map_lookup_elem(&mib_nets_complete, &zero);
	if (complete)
		*complete = 1;
	return 1;
}
