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

/* Per socket: its total_retrans at the last retransmission seen. The kernel
 * adds the segments to RetransSegs and total_retrans on the same line,
 * before the transmit; a transmit that fails there (a netfilter or qdisc
 * drop on output) counts but, up to 6.16, fires no tracepoint. The growth
 * since the last call is what this call stands for in RetransSegs. Dropped
 * when the socket closes (retransmit_forget()). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64); /* struct sock * */
	__type(value, __u32);
} rtx_last SEC(".maps");

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
	__u32 total = BPF_CORE_READ(tp, total_retrans), n, *last;
	__u64 k = (__u64)sk, bytes;
	struct netns_ipv4 *ipv4;
	SCRATCH_EVENT(t);

	last = bpf_map_lookup_elem(&rtx_last, &k);
	if (last) {
		n = total - *last;
		*last = total; /* a socket's retransmits run under its lock */
	} else {
		/* First seen: this call's segments (earlier ones are not
		 * ours to count). */
		n = err ? 0 : BPF_CORE_READ(cb, tcp_gso_segs);
		if (!n && !err)
			n = 1;
		bpf_map_update_elem(&rtx_last, &k, &total, BPF_ANY);
	}
	if (!n) /* 6.17+: an attempt that gave up before counting */
		return;
	if (!conn_sock_wanted(sk) || !conn_owner_wanted(sk, path))
		return;
	key.sub = rtx_kind(sk, skb);
	bytes = BPF_CORE_READ(skb, len);
	if (agg_hit_n(&key, bytes, n))
		return;
	t = agg_template(EVENT_RETRANSMIT);
	if (!t)
		return;
	t->ev.path = path;
	read_snapshot(sk, &t->ev.s);
	read_conn(sk, &t->ev.c);
	conn_owner(&t->ev, sk, path);
	t->ev.c.user_timeout_ms = BPF_CORE_READ((struct inet_connection_sock *)sk, icsk_user_timeout);
	/* 6.15+: TCP_RTO_MAX_MS per socket; TCP_RTO_MAX (120 s) before. */
	if (bpf_core_field_exists(((struct inet_connection_sock *)sk)->icsk_rto_max))
		t->ev.c.rto_max = BPF_CORE_READ((struct inet_connection_sock *)sk, icsk_rto_max);
	t->ev.x.kind = key.sub;
	t->ev.x.err = err;
	t->ev.x.segs = n;
	t->ev.x.bytes = bytes;
	t->ev.x.ssthresh = BPF_CORE_READ(tp, snd_ssthresh);
	t->ev.x.rttvar_us = BPF_CORE_READ(tp, rttvar_us);
	/* int in 5.10, u8 since (and in Debian's 5.10 backport): the probed
	 * read takes either. */
	ipv4 = net_ipv4(BPF_CORE_READ(sk, __sk_common.skc_net.net));
	t->ev.x.retries2 = BPF_CORE_READ_BITFIELD_PROBED(ipv4, sysctl_tcp_retries2);
	agg_commit_n(&key, t, bytes, n);
}

/* A socket's record goes with it. */
static __shared_hook void retransmit_forget(struct sock *sk, int newstate)
{
	__u64 k = (__u64)sk;

	if (newstate == TCP_CLOSE)
		bpf_map_delete_elem(&rtx_last, &k);
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

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* tid */
	__type(value, struct rtx_call);
} rtx_calls SEC(".maps");

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
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} rtx_in_probe SEC(".maps");

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

SEC("fentry/tcp_send_loss_probe")
int BPF_PROG(fentry_tcp_send_loss_probe, struct sock *sk)
{
	rtx_probe_mark(sk);
	return 0;
}

SEC("fexit/tcp_send_loss_probe")
int BPF_PROG(fexit_tcp_send_loss_probe, struct sock *sk)
{
	rtx_probe_mark(NULL);
	return 0;
}

SEC("fexit/__tcp_retransmit_skb")
int BPF_PROG(fexit_loss_probe_retransmit, struct sock *sk, struct sk_buff *skb, int segs, int ret)
{
	if (rtx_in_loss_probe(sk) && rtx_state(sk))
		on_retransmit(sk, skb, PATH_FENTRY, ret);
	return 0;
}

SEC("kprobe/tcp_send_loss_probe")
int BPF_KPROBE(kprobe_tcp_send_loss_probe, struct sock *sk)
{
	rtx_probe_mark(sk);
	return 0;
}

SEC("kretprobe/tcp_send_loss_probe")
int BPF_KRETPROBE(kretprobe_tcp_send_loss_probe)
{
	rtx_probe_mark(NULL);
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
