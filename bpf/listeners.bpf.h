/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Listening sockets by address. A dropped SYN carries only addresses, and
 * the listener's queues explain the drop; an accepted connection is its
 * listener owner's (owners.bpf.h); a PAWS reject at a TIME_WAIT socket is
 * named after the listener of its port.
 *
 * listeners: (netns, port, family, bound address) -> listening socket,
 *            written by owner_set_state() (owners.bpf.h). Keyed like the
 *            kernel's own lookup, because one port often has several
 *            listeners: 0.0.0.0 and a v6only [::] (nginx, Redis), or one
 *            address per interface.
 */
#ifndef LISTENERS_BPF_H
#define LISTENERS_BPF_H

#include "common.bpf.h"

struct listener_key {
	__u32 netns;
	__u16 port;
	__u16 family;
	__u8 addr[16]; /* IPv4 in the first 4 bytes; zero: the wildcard */
};

DEFINE_MAP(listeners, BPF_MAP_TYPE_HASH, struct listener_key, __u64, 8192); /* value: struct sock * */

static __always_inline __u32 sk_netns(struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

static __always_inline struct sock *listener_at(struct listener_key *k)
{
	__u64 *sk = bpf_map_lookup_elem(&listeners, k);

	return sk ? (struct sock *)*sk : NULL;
}

static __always_inline bool v6only(struct sock *sk)
{
	return BPF_CORE_READ_BITFIELD_PROBED(sk, __sk_common.skc_ipv6only);
}

/*
 * The listener that takes a segment to laddr:port, in the kernel's order
 * (__inet_lookup_listener, inet6_lookup_listener): a socket bound to the
 * address before a wildcard one; for IPv4 an AF_INET socket before an
 * AF_INET6 one that is not IPV6_V6ONLY at the same rank (compute_score()
 * adds one for AF_INET), the v4-mapped address being the IPv6 socket's
 * bound address. A SO_REUSEPORT group is found through any member
 * (pick_member() in listen.bpf.h).
 */
static __always_inline struct sock *find_listener_for(__u32 netns, __u16 family, const __u8 *laddr, __u16 port)
{
	struct listener_key k = { .netns = netns, .port = port, .family = family };
	struct sock *l;

	if (family == AF_INET6) {
		__builtin_memcpy(k.addr, laddr, 16);
		l = listener_at(&k);
		if (l)
			return l;
		__builtin_memset(k.addr, 0, 16);
		return listener_at(&k);
	}
	__builtin_memcpy(k.addr, laddr, 4);
	l = listener_at(&k);
	if (l)
		return l;
	k.family = AF_INET6;
	__builtin_memset(k.addr, 0, 4);
	k.addr[10] = 0xff;
	k.addr[11] = 0xff;
	__builtin_memcpy(&k.addr[12], laddr, 4);
	l = listener_at(&k);
	if (l && !v6only(l))
		return l;
	k.family = AF_INET;
	__builtin_memset(k.addr, 0, 16);
	l = listener_at(&k);
	if (l)
		return l;
	k.family = AF_INET6;
	l = listener_at(&k);
	return l && !v6only(l) ? l : NULL;
}

/* Members of a SO_REUSEPORT group looked at, at most: the kernel picks one
 * per connection by hash, and the caller looks for the one whose state
 * matches what the counters say happened. */
#define REUSEPORT_SCAN 16

/* Member i of sk's SO_REUSEPORT group, or NULL past the end (or no group). */
static __always_inline struct sock *reuseport_member(struct sock *sk, __u32 i)
{
	struct sock_reuseport *reuse = BPF_CORE_READ(sk, sk_reuseport_cb);
	struct sock *m = NULL;

	if (!reuse || i >= BPF_CORE_READ(reuse, num_socks))
		return NULL;
	bpf_probe_read_kernel(&m, sizeof(m), (void *)reuse + bpf_core_field_offset(struct sock_reuseport, socks) +
						     i * sizeof(m));
	return m;
}

/* The key a listening socket is found by. */
static __always_inline void listener_key_of(struct sock *sk, struct listener_key *k)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->netns = sk_netns(sk);
	k->port = BPF_CORE_READ(sk, __sk_common.skc_num);
	k->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (k->family == AF_INET6)
		BPF_CORE_READ_INTO(&k->addr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
	else
		BPF_CORE_READ_INTO((__u32 *)k->addr, sk, __sk_common.skc_rcv_saddr);
}

static __always_inline bool is_reuseport(struct sock *sk)
{
	return BPF_CORE_READ_BITFIELD_PROBED(sk, __sk_common.skc_reuseport);
}

#endif /* LISTENERS_BPF_H */
