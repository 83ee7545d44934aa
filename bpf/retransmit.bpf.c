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
#include "owners.bpf.h"
#include "conn.bpf.h"
#include "retransmit.bpf.h"

/* include/net/inet_connection_sock.h: a #define, not in BTF. */
#define ICSK_TIME_LOSS_PROBE 5

/* States past the handshake where data can be outstanding. */
#define RTX_STATES (TCPF(TCP_ESTABLISHED) | TCPF(TCP_FIN_WAIT1) | TCPF(TCP_CLOSE_WAIT) | \
		    TCPF(TCP_CLOSING) | TCPF(TCP_LAST_ACK))

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
		__sync_fetch_and_add(&rtx_socks_made, 1);
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
	r = rtx_socks_made ? bpf_map_lookup_elem(&rtx_socks, &k) : NULL;
	rto_episode_end(k, r);
	if (r && !bpf_map_delete_elem(&rtx_socks, &k))
		__sync_fetch_and_add(&rtx_socks_made, -1);
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

/* kprobe_<name> and kretprobe_<name> on fn(sk, skb, ...): call at fn's
 * return, with sk, skb, ret and `path`. A kretprobe sees no arguments, so
 * the kprobe parks sk and skb per thread when `wanted` at the entry. */
#define RTX_KPROBES(fn, name, wanted, call)                                                      \
	ONE_CALL_PROG("kprobe/" #fn, kprobe_##name, BPF_KPROBE, PATH_KPROBE,                      \
		      if (wanted) rtx_stash(sk, skb), struct sock *sk, struct sk_buff *skb)        \
	ONE_CALL_PROG("kretprobe/" #fn, kretprobe_##name, BPF_KRETPROBE, PATH_KPROBE,             \
		      struct rtx_call c; if (rtx_unstash(&c)) {                                    \
			      struct sock *sk = (struct sock *)c.sk;                               \
			      struct sk_buff *skb = (struct sk_buff *)c.skb;                       \
			      call;                                                                \
		      }, int ret)

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

/* kprobe_loss_probe_retransmit, kretprobe_loss_probe_retransmit */
RTX_KPROBES(__tcp_retransmit_skb, loss_probe_retransmit, rtx_in_loss_probe(sk) && rtx_state(sk),
	    on_retransmit(sk, skb, path, ret))
