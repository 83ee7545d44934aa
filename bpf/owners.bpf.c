/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The programs of socket owners (owners.bpf.h): the owners of sockets made
 * before tcptrace started, and the probes that tell whether this kernel
 * lets tracing programs use socket storage. Owners of sockets made later
 * are recorded by the inet_sock_set_state program (tcptrace.bpf.c).
 */
#include "owners.bpf.h"

/* sk_cgrp_data before 5.15: one word that holds the cgroup's address, or,
 * with a low bit set, net_prio's and net_cls's data instead. */
struct sock_cgroup_data___word {
	union {
		__u64 val;
	};
} __attribute__((preserve_access_index));

/* The cgroup (v2) the socket was made in (cgroup_sk_alloc()), 0 when the
 * socket does not say: a socket of a cgroup v1 net_prio/net_cls user
 * before 5.15, or the root's. */
static __always_inline __u64 sock_cgroup_id(struct sock *sk)
{
	struct cgroup *cg;

	if (bpf_core_field_exists(struct sock_cgroup_data, cgroup)) {
		cg = BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
	} else {
		struct sock_cgroup_data___word *d = (void *)&sk->sk_cgrp_data;
		__u64 v = BPF_CORE_READ(d, val);

		cg = (v & 3) ? NULL : (struct cgroup *)v;
	}
	return cg ? BPF_CORE_READ(cg, kn, id) : 0;
}

/*
 * Sockets made before tcptrace started. iter/tcp walks the TCP sockets of
 * the network namespace of whoever reads it, so user space reads it once
 * from within each namespace in use, after filling inode_owners.
 */
SEC("iter/tcp")
int iter_tcp_owners(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct tcp_sock *tp;
	struct sock *sk;
	struct owner_rec r = {};
	long err = 0;
	struct owner *o;
	bool listening;
	__u32 ino;

	if (!skc)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0; /* TIME_WAIT and request sockets: no owner */
	sk = (struct sock *)tp;
	ino = BPF_CORE_READ(sk, sk_socket, file, f_inode, i_ino);
	o = bpf_map_lookup_elem(&inode_owners, &ino);
	listening = BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_LISTEN;
	/* The socket's storage as where the tracepoint would write it
	 * (set_sock_owner_current()): a table that refused the record (not
	 * for -EEXIST: the tracepoint recorded the socket meanwhile), a
	 * SO_REUSEPORT listener. */
	if (o) {
		__u64 cg = sock_cgroup_id(sk);

		__builtin_memcpy(&r.o, o, sizeof(r.o));
		/* The socket's own cgroup before its process's now (user
		 * space's, from /proc): a process may have moved since. */
		if (cg)
			r.o.cgroup = cg;
		err = owner_put(sock_addr(sk), &r, BPF_NOEXIST);
	}
	if (o && ((err && err != -EEXIST) || (listening && is_reuseport(sk))) && cfg_owner_storage_iter) {
		struct owner *s = bpf_sk_storage_get(&owner_store, tp, NULL, BPF_SK_STORAGE_GET_F_CREATE);

		/* A record the tracepoint made meanwhile is newer. */
		if (s && !s->tgid)
			__builtin_memcpy(s, &r.o, sizeof(*s));
	}
	if (listening) {
		struct listener_key lk;
		__u64 key = (__u64)sk;

		listener_key_of(sk, &lk);
		bpf_map_update_elem(&listeners, &lk, &key, BPF_NOEXIST);
	}
	return 0;
}

/*
 * Loaded and never attached: whether this kernel has BPF_CMPXCHG, which
 * owner_sets needs (5.12+).
 */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(probe_owner_sets, struct sock *sk)
{
	__u32 zero = 0;
	struct owner_set *s = bpf_map_lookup_elem(&owner_sets, &zero);

	if (s)
		__sync_val_compare_and_swap(&s->sk[0], 0, 0);
	return 0;
}

/*
 * Loaded and never attached: whether this kernel lets a tp_btf program, and
 * an iterator, use socket storage (the loader sets cfg_owner_storage* from
 * the verifier's answer).
 */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(probe_owner_storage, struct sock *sk)
{
	bpf_sk_storage_get(&owner_store, sk, NULL, 0);
	return 0;
}

SEC("iter/tcp")
int probe_owner_storage_iter(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct tcp_sock *tp;

	if (!skc)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (tp)
		bpf_sk_storage_get(&owner_store, tp, NULL, 0);
	return 0;
}
