/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the delayed-ACK detector (delack.bpf.c) leaves for the Nagle detector
 * (nagle.bpf.c): each connection's latest delayed-ACK firing, by its
 * addresses.
 */
#ifndef DELACK_BPF_H
#define DELACK_BPF_H

#include "common.bpf.h"

/* A connection's latest delayed ACK, by its addresses: the Nagle detector
 * looks up the peer of a connection whose held write an ACK released, to
 * prove that the ACK was the peer's delayed one (both ends on this host). */
struct conn_tuple {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u32 _pad;
};

struct peer_delack {
	__u64 fired_ns;
	__u64 held_ns;
	__u32 ato;
	__u32 pid;
	__u8 comm[TASK_COMM_LEN];
	__u8 in_pingpong;
	__u8 owner_known;
};

DEFINE_MAP(delack_recent, BPF_MAP_TYPE_LRU_HASH, struct conn_tuple, struct peer_delack, 16384);

/* A v4-mapped IPv6 address in the IPv4 layout of read_snapshot(), so that a
 * dual-stack server and an IPv4 client name the same connection alike. */
static __always_inline void tuple_addr(__u8 *dst, const __u8 *src, __u16 family)
{
	const __u32 *w = (const __u32 *)src;

	__builtin_memset(dst, 0, 16);
	if (family == AF_INET6 && w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff)) {
		__builtin_memcpy(dst, src + 12, 4);
	} else if (family == AF_INET6) {
		__builtin_memcpy(dst, src, 16);
	} else {
		__builtin_memcpy(dst, src, 4);
	}
}

/* The connection as seen from this end (reverse = from the peer's end). */
static __always_inline void conn_tuple_of(const struct tcp_snapshot *s, struct conn_tuple *t, bool reverse)
{
	__builtin_memset(t, 0, sizeof(*t));
	tuple_addr(reverse ? t->daddr : t->saddr, s->saddr, s->family);
	tuple_addr(reverse ? t->saddr : t->daddr, s->daddr, s->family);
	t->sport = reverse ? s->dport : s->sport;
	t->dport = reverse ? s->sport : s->dport;
}

#endif /* DELACK_BPF_H */
