/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the connection detectors (connect, ports, timewait, paws, reset)
 * share: a connection's addresses and the namespace's limits read into a
 * conn_snapshot, the filters and owners of a connection whose events
 * happen in timer or softirq context, and the socket a kretprobe waits on.
 */
#ifndef CONN_BPF_H
#define CONN_BPF_H

#include "common.bpf.h"
#include "owners.bpf.h"

#define TCPF(s) (1U << (s))

/* kprobe path: the socket passed to the function whose return is awaited. */
DEFINE_MAP(kprobe_socks, BPF_MAP_TYPE_LRU_HASH, __u32, __u64, 4096); /* key: tid */

/* net->ipv4, whatever its offset in this kernel's struct net. */
static __always_inline struct netns_ipv4 *net_ipv4(struct net *net)
{
	return (void *)net + bpf_core_field_offset(struct net, ipv4);
}

/* 5.10 counted TIME_WAIT sockets in an atomic_t; 6.1 made it a refcount
 * starting at 1. The death row is embedded in netns_ipv4 in every kernel
 * read, but 6.1's per-netns ehash series briefly had a pointer: both read. */
struct inet_timewait_death_row___old {
	atomic_t tw_count;
};

struct netns_ipv4___dr_ptr {
	struct inet_timewait_death_row *tcp_death_row;
};

/* The TIME_WAIT sockets a namespace holds: tw_refcount counts them plus
 * one (5.19+), tw_count before. */
static __always_inline int tw_held(struct inet_timewait_death_row *dr)
{
	int count;

	if (bpf_core_field_exists(dr->tw_refcount)) {
		count = BPF_CORE_READ(dr, tw_refcount.refs.counter) - 1;
	} else {
		struct inet_timewait_death_row___old *old = (void *)dr;

		count = BPF_CORE_READ(old, tw_count.counter);
	}
	return count < 0 ? 0 : count;
}

static __always_inline void read_tw_limits(struct net *net, struct conn_snapshot *c)
{
	struct netns_ipv4 *ipv4 = net_ipv4(net);
	struct inet_timewait_death_row *dr;

	if (bpf_core_field_size(ipv4->tcp_death_row) == sizeof(void *))
		dr = BPF_CORE_READ((struct netns_ipv4___dr_ptr *)ipv4, tcp_death_row);
	else
		dr = (void *)ipv4 + bpf_core_field_offset(struct netns_ipv4, tcp_death_row);
	if (!dr)
		return;
	c->tw_count = tw_held(dr);
	c->max_tw_buckets = BPF_CORE_READ(dr, sysctl_max_tw_buckets);
	c->limits_known |= LIMIT_TW;
}

/* Addresses, ports and namespace: struct sock_common, so this reads a
 * TIME_WAIT or request socket as well as a full one. */
static __always_inline void read_conn(struct sock *sk, struct conn_snapshot *c)
{
	c->sk = (__u64)sk;
	c->family = read_addrs(sk, &c->saddr, &c->daddr, &c->sport, &c->dport);
	c->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	c->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	if (c->state != TCP_TIME_WAIT && c->state != TCP_NEW_SYN_RECV) {
		c->ino = BPF_CORE_READ(sk, sk_socket, file, f_inode, i_ino);
		/* tcp_set_state(CLOSE) releases the local port (inet_num = 0)
		 * before the state-change tracepoint; inet_sport keeps it. */
		if (!c->sport)
			c->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	}
}

/* The --port and -4/-6 filters. Unlike sock_wanted(), the local port comes
 * from inet_sport when inet_num is 0: a socket moved to CLOSE (a failed
 * connect, a close without TIME_WAIT, an aborting close) has released its
 * port before the state-change tracepoint fires. */
static __always_inline bool conn_sock_wanted(struct sock *sk)
{
	__u16 sport, dport;

	if (cfg_family && BPF_CORE_READ(sk, __sk_common.skc_family) != cfg_family)
		return false;
	if (!cfg_port)
		return true;
	sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (!sport)
		sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	return sport == cfg_port || dport == cfg_port;
}

/* Owner of a connection in timer or softirq context. A socket the kernel
 * passed to a tracing program (every path but kprobes) has its owner in its
 * own storage, kept however many sockets the host holds; kprobes have only
 * the table. path is a constant at every call site, so the kprobe programs
 * hold no storage call the verifier would refuse them. */
static __always_inline void conn_owner(struct event *e, struct sock *sk, __u8 path)
{
	if (path == PATH_KPROBE)
		e->c.owner_known = fill_owner(e, sk);
	else
		e->c.owner_known = fill_sock_owner(e, sk, false);
}

static __always_inline bool conn_owner_wanted(struct sock *sk, __u8 path)
{
	if (path == PATH_KPROBE)
		return owner_wanted(sk);
	return sock_owner_wanted(sk, false);
}

/* The peer's address in an aggregation key (struct agg_key): events
 * aggregated per destination get one line per address. */
static __always_inline void key_peer(struct agg_key *key, struct sock *sk)
{
	if (BPF_CORE_READ(sk, __sk_common.skc_family) == AF_INET6)
		BPF_CORE_READ_INTO(&key->addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	else
		BPF_CORE_READ_INTO((__u32 *)key->addr, sk, __sk_common.skc_daddr);
}

static __always_inline void kprobe_stash(struct sock *sk)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 v = (__u64)sk;

	bpf_map_update_elem(&kprobe_socks, &tid, &v, BPF_ANY);
}

static __always_inline struct sock *kprobe_unstash(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *v = bpf_map_lookup_elem(&kprobe_socks, &tid);
	struct sock *sk;

	if (!v)
		return NULL;
	sk = (struct sock *)*v;
	bpf_map_delete_elem(&kprobe_socks, &tid);
	return sk;
}

/*
 * fexit_<fn>, kprobe_<fn> and kretprobe_<fn>: call at the return of fn, a
 * function with a socket argument sk, with `ret` (declared ret_decl) its
 * return value and `path` the probe path. fexit finds the return value
 * after the arguments, so args are all of fn's. A kretprobe sees no
 * arguments: the kprobe at fn's entry parks sk for it, per thread.
 */
#define SOCK_RETURN_PROGS(fn, ret_decl, call, args...)                                              \
	ONE_CALL_PROG("fexit/" #fn, fexit_##fn, BPF_PROG, PATH_FENTRY, call, args, ret_decl)        \
	ONE_CALL_PROG("kprobe/" #fn, kprobe_##fn, BPF_KPROBE, PATH_KPROBE, kprobe_stash(sk), args) \
	ONE_CALL_PROG("kretprobe/" #fn, kretprobe_##fn, BPF_KRETPROBE, PATH_KPROBE,                 \
		      struct sock *sk = kprobe_unstash(); if (sk) { call; }, ret_decl)

#endif /* CONN_BPF_H */
