/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the retransmit detector's two kinds of line share: retransmit
 * (retransmit.bpf.c) and rto_stall (retransmit_stall.bpf.c). Each socket's record
 * of its retransmissions and RTO episode, the set of sockets in an episode
 * that the received-segment program tests (tcptrace.bpf.c), and what a
 * line says about the connection.
 */
#ifndef RETRANSMIT_BPF_H
#define RETRANSMIT_BPF_H

#include "common.bpf.h"
#include "owners.bpf.h"
#include "conn.bpf.h"

/*
 * Per socket, what its retransmissions leave for the next one and for
 * rto_stall. A socket's retransmissions, its timer and its received
 * segments all run under the socket's lock, so the record needs no atomics.
 * Dropped when the socket closes (retransmit_forget()).
 *
 * total: its total_retrans at the last retransmission seen. The kernel adds
 * the segments to RetransSegs and total_retrans on the same line, before
 * the transmit; a transmit that fails there (a netfilter or qdisc drop on
 * output) counts but, up to 6.16, fires no tracepoint. The growth since the
 * last call is what this call stands for in RetransSegs.
 *
 * The RTO episode: the retransmission timer's first firing since data was
 * last acknowledged (icsk_retransmits is 1 at its retransmission: the timer
 * counts the firing before it resends), the latest firing, and the first
 * segment from the peer that showed the path back while the data waits.
 */
struct rtx_sock {
	__u64 first_rto_ns; /* 0: no episode seen from its start */
	__u64 last_rto_ns;
	__u64 heard_ns;     /* 0: no stall seen in this episode */
	__u32 total;
	__u8 path;          /* the probe path of the latest retransmission */
	__u8 _pad[3];
};

DEFINE_MAP(rtx_socks, BPF_MAP_TYPE_LRU_HASH, __u64, struct rtx_sock, 65536); /* key: struct sock * */

/* Records on_retransmit() made in rtx_socks less those a close deleted: 0
 * while no socket of the host has one, the common case, when a close
 * (every connection, twice on a host that serves itself) need not look.
 * Never below the records there: an LRU eviction leaves it higher, which
 * only costs closes their lookup. */
__u64 rtx_socks_made = 0;

/* Segments counted in a line other than their own: the socket's
 * total_retrans grew by more than this call's segments, so an earlier
 * retransmission of it was not seen (up to 6.16 a transmit that failed
 * fires no tracepoint; a kprobe run the kernel skipped). The count stays
 * exact; those segments go under this call's kind. Reported at exit. */
DEFINE_COUNTERS(rtx_folded, 1);

/*
 * Sockets in an RTO episode (their record's last_rto_ns set). tcp_probe,
 * which runs for every segment the host receives, must tell a socket in an
 * episode from the rest without reading the socket (its lines are often not
 * yet in the cache at the top of tcp_rcv_established()) and without a map
 * lookup (a helper call and a hash on every segment, dearer than the reads
 * it would spare). So it reads two globals: rto_episodes, 0 while no socket
 * of the host is in backoff, then the counter of the socket's slot in
 * rto_slots, the number of sockets in an episode that fall there; only a
 * socket whose slot is not 0 (its own episode, or a collision) is read
 * further. The slot comes from skc_hash, the hash of the connection's
 * addresses that the established-socket lookup has just compared: that
 * line of the socket is in the cache when tcp_probe runs.
 *
 * rto_socks holds the episodes themselves, with their slot, and both counts
 * follow its inserts and deletes that succeeded: an LRU eviction of a record
 * from rtx_socks cannot leave them counting, the entry goes when the episode
 * ends or the socket closes, record or not.
 */
DEFINE_MAP(rto_socks, BPF_MAP_TYPE_HASH, __u64, __u32, 4096); /* struct sock * -> its slot of rto_slots */

/* Defined in this order, rto_episodes shares its line of .bss with
 * nagle_holders, the other load every run of tcp_probe makes. */
__u64 rto_episodes = 0;

#define RTO_SLOTS 256
__u32 rto_slots[RTO_SLOTS] = {};

/* Episodes rto_stall did not watch: rto_socks was full when they began.
 * Reported at exit. */
DEFINE_COUNTERS(rto_unwatched, 1);

static __always_inline void rto_episode_start(struct sock *sk, __u64 k)
{
	/* The index stays in a 64-bit variable of its own: 5.10's verifier
	 * forgets the bounds of a 32-bit value once it is on the stack. */
	__u64 slot = BPF_CORE_READ(sk, __sk_common.skc_hash) & (RTO_SLOTS - 1);
	__u32 val = slot;
	long err = bpf_map_update_elem(&rto_socks, &k, &val, BPF_NOEXIST);

	if (!err) {
		__sync_fetch_and_add(&rto_slots[slot], 1);
		__sync_fetch_and_add(&rto_episodes, 1);
		return;
	}
	/* -EEXIST: the socket's record was evicted and made again within
	 * the episode. Anything else is a full table (not only -E2BIG: see
	 * owners.bpf.h). */
	if (err == -EEXIST)
		return;
	counter_inc(&rto_unwatched, 0);
}

static __always_inline void rto_episode_end(__u64 k, struct rtx_sock *r)
{
	__u32 *slot;
	__u64 s;

	if (r) {
		r->first_rto_ns = 0;
		r->last_rto_ns = 0;
		r->heard_ns = 0;
	}
	if (!rto_episodes)
		return;
	slot = bpf_map_lookup_elem(&rto_socks, &k);
	if (!slot)
		return;
	s = *slot & (RTO_SLOTS - 1);
	if (!bpf_map_delete_elem(&rto_socks, &k)) {
		__sync_fetch_and_add(&rto_episodes, -1);
		__sync_fetch_and_add(&rto_slots[s], -1);
	}
}

/* What a retransmit or rto_stall line says about the connection: its state,
 * owner, recovery and the settings that bound the backoff. */
static __always_inline void rtx_fill(struct sock *sk, struct event *e, __u8 path)
{
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)sk;
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct netns_ipv4 *ipv4;

	read_snapshot(sk, &e->s);
	read_conn(sk, &e->c);
	e->path = path;
	conn_owner(e, sk, path);
	e->c.user_timeout_ms = BPF_CORE_READ(icsk, icsk_user_timeout);
	/* 6.15+: TCP_RTO_MAX_MS per socket; TCP_RTO_MAX (120 s) before. */
	if (bpf_core_field_exists(icsk->icsk_rto_max))
		e->c.rto_max = BPF_CORE_READ(icsk, icsk_rto_max);
	e->x.ssthresh = BPF_CORE_READ(tp, snd_ssthresh);
	/* What TCP_INFO reports as tcpi_rttvar (mdev_us >> 2): rttvar_us is
	 * the RTO's variance term, which tcp_rtt_estimator() keeps at
	 * tcp_rto_min or above, not a measurement. */
	e->x.rttvar_us = BPF_CORE_READ(tp, mdev_us);
	/* int in 5.10, u8 since (and in Debian's 5.10 backport): the probed
	 * read takes either. */
	ipv4 = net_ipv4(BPF_CORE_READ(sk, __sk_common.skc_net.net));
	e->x.retries2 = BPF_CORE_READ_BITFIELD_PROBED(ipv4, sysctl_tcp_retries2);
	/* 6.15+: the namespace's ceiling, the default of new sockets'
	 * TCP_RTO_MAX_MS. */
	if (bpf_core_field_exists(ipv4->sysctl_tcp_rto_max_ms))
		e->x.rto_max_sysctl_ms = BPF_CORE_READ(ipv4, sysctl_tcp_rto_max_ms);
}

#endif /* RETRANSMIT_BPF_H */
