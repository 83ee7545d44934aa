/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Detector retransmit: retransmit.
 *
 * Every retransmission of a connection past its handshake passes
 * __tcp_retransmit_skb(), where tcp:tcp_retransmit_skb fires: the
 * retransmission timer's (tcp_retransmit_timer()), a tail loss probe's
 * (tcp_send_loss_probe() calls __tcp_retransmit_skb() directly), and the
 * retransmit queue's (tcp_xmit_retransmit_queue(), from ACKs, the RACK
 * reorder timer and TSQ). SYN retransmits pass too (the connect detector's);
 * SYN-ACK retransmits have their own tracepoint. Up to 6.16 it fires after a
 * transmit that succeeded, from 6.17 for every attempt with its result.
 *
 * The kind, from what the kernel set before the tracepoint (the same in
 * every version from 5.10 to 6.18):
 *   - icsk_pending 0: tcp_write_timer_handler() clears it before it runs
 *     the retransmission timer: the RTO fired (timeout);
 *   - icsk_pending ICSK_TIME_LOSS_PROBE and the segment not marked lost:
 *     tcp_send_loss_probe() (the probe timer stays pending until it is
 *     sent; the queue resends only segments marked lost);
 *   - a segment marked lost (TCPCB_LOST): the retransmit queue, which counts
 *     it in TCPFastRetrans, or in TCPSlowStartRetrans when the connection is
 *     in TCP_CA_Loss (after a timeout or a path-MTU drop); the kind follows
 *     the same test.
 */
#include "common.bpf.h"
#include "owner.bpf.h"
#include "conn.bpf.h"

/* include/net/inet_connection_sock.h: a #define, not in BTF. */
#define ICSK_TIME_LOSS_PROBE 5



/* States past the handshake where data can be outstanding. */
#define RTX_STATES (TCPF(TCP_ESTABLISHED) | TCPF(TCP_FIN_WAIT1) | TCPF(TCP_CLOSE_WAIT) | \
		    TCPF(TCP_CLOSING) | TCPF(TCP_LAST_ACK))

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
	__u32 val = slot, zero = 0;
	__u64 *n;
	long err = bpf_map_update_elem(&rto_socks, &k, &val, BPF_NOEXIST);

	if (!err) {
		__sync_fetch_and_add(&rto_slots[slot], 1);
		__sync_fetch_and_add(&rto_episodes, 1);
		return;
	}
	/* -EEXIST: the socket's record was evicted and made again within
	 * the episode. Anything else is a full table (not only -E2BIG: see
	 * owner.bpf.h). */
	if (err == -EEXIST)
		return;
	n = bpf_map_lookup_elem(&rto_unwatched, &zero);
	if (n)
		*n += 1;
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

/* Which of rto_stall's lines the run wants; retransmit lines are the
 * default. rto_stall needs the retransmit programs for its episodes even
 * when the retransmissions themselves are not wanted. */
const volatile __u8 cfg_emit_retransmit = 1;

static __always_inline __u8 rtx_kind(struct sock *sk, struct sk_buff *skb)
{
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)sk;
	struct tcp_skb_cb *cb = (void *)skb + bpf_core_field_offset(struct sk_buff, cb);
	__u8 pending = BPF_CORE_READ(icsk, icsk_pending);
	bool lost = BPF_CORE_READ(cb, sacked) & TCPCB_LOST;

	if (pending == 0)
		return RTX_TIMEOUT;
	if (lost)
		return BPF_CORE_READ_BITFIELD_PROBED(icsk, icsk_ca_state) == TCP_CA_Loss ? RTX_SLOW_START : RTX_FAST;
	if (pending == ICSK_TIME_LOSS_PROBE)
		return RTX_LOSS_PROBE;
	return RTX_OTHER;
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

/* One line per connection and kind, then its count per interval. The
 * entry's wait_ns sum carries the bytes retransmitted (no retransmission
 * waits): the line says how many bytes its segments held. */
static __shared_hook void on_retransmit(struct sock *sk, struct sk_buff *skb, __u8 path, int err)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct tcp_skb_cb *cb = (void *)skb + bpf_core_field_offset(struct sk_buff, cb);
	struct agg_key key = { .sk = (__u64)sk, .type = EVENT_RETRANSMIT };
	__u32 total = BPF_CORE_READ(tp, total_retrans), n;
	__u32 own = BPF_CORE_READ(cb, tcp_gso_segs) ?: 1; /* this call's segments */
	__u64 k = (__u64)sk, bytes, now;
	struct rtx_sock *r, fresh = {};
	__u8 kind = rtx_kind(sk, skb);
	SCRATCH_EVENT(t);

	r = bpf_map_lookup_elem(&rtx_socks, &k);
	if (r) {
		n = total - r->total;
		if (n > own)
			counter_add(&rtx_folded, 0, n - own);
	} else {
		/* First seen: this call's segments (earlier ones are not
		 * ours to count). */
		n = err ? 0 : own;
		if (bpf_map_update_elem(&rtx_socks, &k, &fresh, BPF_ANY))
			return;
		r = bpf_map_lookup_elem(&rtx_socks, &k);
		if (!r)
			return;
	}
	r->total = total;
	r->path = path;
	if (kind == RTX_TIMEOUT) {
		now = bpf_ktime_get_ns();
		/* The zero-window branch of the timer does not count its
		 * firings (icsk_retransmits stays 0): no episode. */
		switch (BPF_CORE_READ((struct inet_connection_sock *)sk, icsk_retransmits)) {
		case 0:
			break;
		case 1:
			r->first_rto_ns = now;
			r->heard_ns = 0;
			/* fallthrough */
		default:
			if (!r->last_rto_ns)
				rto_episode_start(sk, k);
			r->last_rto_ns = now;
		}
	}
	if (!n || !cfg_emit_retransmit) /* 6.17+: n 0 is an attempt that gave up before counting */
		return;
	if (!conn_sock_wanted(sk) || !conn_owner_wanted(sk, path))
		return;
	key.sub = kind;
	bytes = BPF_CORE_READ(skb, len);
	if (agg_hit_n(&key, bytes, n))
		return;
	t = agg_template(EVENT_RETRANSMIT);
	if (!t)
		return;
	rtx_fill(sk, &t->ev, path);
	t->ev.x.kind = kind;
	t->ev.x.err = err;
	t->ev.x.segs = n;
	t->ev.x.bytes = bytes;
	agg_commit_n(&key, t, bytes, n);
}

/* A socket's record goes with it, and its episode, which outlives the
 * record when the LRU evicted it. */
static __shared_hook void retransmit_forget(struct sock *sk, int newstate)
{
	__u64 k = (__u64)sk;
	struct rtx_sock *r;

	if (newstate != TCP_CLOSE)
		return;
	r = bpf_map_lookup_elem(&rtx_socks, &k);
	rto_episode_end(k, r);
	if (r)
		bpf_map_delete_elem(&rtx_socks, &k);
}

/*
 * rto_stall: a segment from the peer, at the top of tcp_rcv_established()
 * (tcp:tcp_probe), before tcp_ack() has looked at it: the socket's state is
 * the one the segment found.
 *
 * The stall: data is out (packets_out), the retransmission timer has fired
 * since it was last acknowledged (icsk_retransmits > 0; tcp_ack() zeroes it
 * when snd_una advances), and this segment acknowledges nothing new. A
 * segment that acknowledges nothing does not re-arm the timer (tcp_ack()
 * re-arms it only for an ACK that advanced snd_una or gave an RTT sample),
 * so the data waits for the backed-off timer whatever else arrives. A
 * segment that left the peer before our latest retransmission could reach
 * it says nothing yet: the stall begins once the latest retransmission is
 * older than the smoothed RTT and still unanswered.
 *
 * The end: a segment that acknowledges new data (ack after snd_una) while a
 * stall was seen: the recovered line, with the whole episode's length and
 * the part of it with the peer heard.
 *
 * The caller (tcptrace.bpf.c) has found the socket's slot of rto_slots in
 * use. An episode whose end tcptrace does not see (acknowledged outside
 * ESTABLISHED) holds its slot until its socket closes. Out of line, unlike
 * the other handlers: inlined, its code made every run of the tcp_probe
 * program dearer, stall or not (pingpong load, bpf_stats: 71-73 ns a run
 * against 52-54 for an empty program; out of line 51-53 against 49-51).
 */
static __noinline __attribute__((unused)) void rto_stall_check(struct sock *sk, struct sk_buff *skb)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	struct agg_key key = { .sk = (__u64)sk, .type = EVENT_RTO_STALL };
	__u64 k = (__u64)sk, now, srtt_ns;
	__u32 ack, snd_una;
	struct rtx_sock *r;
	SCRATCH_EVENT(t);
	__u8 th[14];

	if (!tp || !tp->inet_conn.icsk_retransmits || !tp->packets_out)
		return;
	r = bpf_map_lookup_elem(&rtx_socks, &k);
	if (!r || !r->last_rto_ns)
		return;
	/* tcp_rcv_established() gets the segment with data at its TCP header. */
	if (bpf_probe_read_kernel(th, sizeof(th), BPF_CORE_READ(skb, data)))
		return;
	__builtin_memcpy(&ack, &th[8], sizeof(ack));
	ack = bpf_ntohl(ack);
	snd_una = BPF_CORE_READ(tp, snd_una);
	now = bpf_ktime_get_ns();
	if ((th[13] & TCP_FLAG_ACK) && (__s32)(ack - snd_una) > 0) {
		if (!r->heard_ns) {
			rto_episode_end(k, r);
			return; /* answered without a stall */
		}
		key.sub = RTO_STALL_RECOVERED;
	} else {
		if (!r->heard_ns) {
			srtt_ns = (__u64)(BPF_CORE_READ(tp, srtt_us) >> 3) * 1000;
			if (now - r->last_rto_ns <= srtt_ns)
				return;
			r->heard_ns = now;
		}
		key.sub = RTO_STALL_WAITING;
	}
	/* The line is the path's that saw the retransmissions; a tracing
	 * program may read the owner either way. */
	if (conn_sock_wanted(sk) && conn_owner_wanted(sk, r->path) && !agg_hit(&key, 0)) {
		t = agg_template(EVENT_RTO_STALL);
		if (t) {
			rtx_fill(sk, &t->ev, r->path);
			t->ev.x.kind = key.sub;
			t->ev.x.episode_known = r->first_rto_ns != 0;
			if (r->first_rto_ns)
				t->ev.x.since_first_rto_ns = now - r->first_rto_ns;
			t->ev.x.since_last_rto_ns = now - r->last_rto_ns;
			t->ev.x.since_heard_ns = now - r->heard_ns;
			agg_commit(&key, t, 0);
		}
	}
	if (key.sub == RTO_STALL_RECOVERED)
		rto_episode_end(k, r);
}

/* Whether a retransmission is this detector's: past the handshake. */
static __shared_hook bool rtx_state(struct sock *sk)
{
	return TCPF(BPF_CORE_READ(sk, __sk_common.skc_state)) & RTX_STATES;
}

/* ---- fentry and kprobe paths ----------------------------------------- */

/* kprobe path: the socket and segment of a retransmit call, by thread, for
 * its return probe. */
struct rtx_call {
	__u64 sk;
	__u64 skb;
};

DEFINE_MAP(rtx_calls, BPF_MAP_TYPE_LRU_HASH, __u32, struct rtx_call, 4096); /* key: tid */

static __shared_hook void rtx_stash(struct sock *sk, struct sk_buff *skb)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct rtx_call c = { .sk = (__u64)sk, .skb = (__u64)skb };

	bpf_map_update_elem(&rtx_calls, &tid, &c, BPF_ANY);
}

static __shared_hook bool rtx_unstash(struct rtx_call *out)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct rtx_call *c = bpf_map_lookup_elem(&rtx_calls, &tid);

	if (!c)
		return false;
	*out = *c;
	bpf_map_delete_elem(&rtx_calls, &tid);
	return true;
}

/*
 * A tail loss probe calls __tcp_retransmit_skb() itself, not
 * tcp_retransmit_skb(). A probe on __tcp_retransmit_skb() would also see
 * every call tcp_retransmit_skb() makes on most builds (and none on Debian's
 * 6.1, whose tcp_retransmit_skb() calls a split-off copy), so it counts only
 * inside tcp_send_loss_probe(), which the timer calls by its symbol on every
 * build: this CPU's socket in the probe, set on entry, cleared on return.
 */
DEFINE_MAP(rtx_in_probe, BPF_MAP_TYPE_PERCPU_ARRAY, __u32, __u64, 1);

static __always_inline void rtx_probe_mark(struct sock *sk)
{
	__u32 zero = 0;
	__u64 *v = bpf_map_lookup_elem(&rtx_in_probe, &zero);

	if (v)
		*v = (__u64)sk;
}

static __always_inline bool rtx_in_loss_probe(struct sock *sk)
{
	__u32 zero = 0;
	__u64 *v = bpf_map_lookup_elem(&rtx_in_probe, &zero);

	return v && *v == (__u64)sk;
}

/* fentry_tcp_send_loss_probe, kprobe_tcp_send_loss_probe */
ENTRY_PROGS(tcp_send_loss_probe, rtx_probe_mark(sk), struct sock *sk)
/* fexit_tcp_send_loss_probe, kretprobe_tcp_send_loss_probe */
RETURN_PROGS(tcp_send_loss_probe, rtx_probe_mark(NULL))

SEC("fexit/__tcp_retransmit_skb")
int BPF_PROG(fexit_loss_probe_retransmit, struct sock *sk, struct sk_buff *skb, int segs, int ret)
{
	if (rtx_in_loss_probe(sk) && rtx_state(sk))
		on_retransmit(sk, skb, PATH_FENTRY, ret);
	return 0;
}

SEC("kprobe/__tcp_retransmit_skb")
int BPF_KPROBE(kprobe_loss_probe_retransmit, struct sock *sk, struct sk_buff *skb)
{
	if (rtx_in_loss_probe(sk) && rtx_state(sk))
		rtx_stash(sk, skb);
	return 0;
}

SEC("kretprobe/__tcp_retransmit_skb")
int BPF_KRETPROBE(kretprobe_loss_probe_retransmit, int ret)
{
	struct rtx_call c;

	if (rtx_unstash(&c))
		on_retransmit((struct sock *)c.sk, (struct sk_buff *)c.skb, PATH_KPROBE, ret);
	return 0;
}
