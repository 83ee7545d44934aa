/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Detector listen: syn_drop, syn_cookie, listen_overflow, synack_retransmit.
 *
 * syn_drop / syn_cookie. tcp_conn_request() returns 0 whatever it does with a
 * SYN, and the dropped SYN is freed with consume_skb(), not kfree_skb(), so
 * no drop reason names it. What does record each branch is the network
 * namespace's SNMP counters, incremented per CPU with bottom halves off
 * while the SYN is processed:
 *   ListenOverflows + ListenDrops   accept queue full       (drop)
 *   TCPReqQFullDrop + ListenDrops   SYN queue full, no cookies (drop)
 *   TCPReqQFullDoCookies            SYN queue full, cookie sent (no drop)
 *   ListenDrops alone               last-quarter rule, no memory, route, LSM
 * So the detector reads this CPU's counters of the SYN's namespace around
 * the SYN: with fentry/fexit or kprobes on tcp_conn_request() before and
 * after; on the tracepoint path, at the SYN's own consume_skb() (6.3+, whose
 * `location` says the caller was tcp_rcv_state_process()) against what the
 * previous SYN on this CPU left. Same CPU, softirq: nothing else runs in
 * between, except a third-ACK overflow, whose handler moves the baseline
 * too. The first SYN a CPU sees in a namespace has no baseline and is judged
 * by the listener's queues instead.
 *
 * listen_overflow: the handshake's final ACK found the accept queue full,
 * so *_syn_recv_sock() made no child and counted ListenOverflows. It is
 * reached two ways: tcp_check_req() for a request in the SYN queue, and
 * tcp_get_cookie_sock() for an ACK that carries a syncookie (no request was
 * kept: the SYN queue was full, or tcp_syncookies=2). On the tracepoint
 * path, 6.15+ frees the first kind with the drop reason TCP_LISTEN_OVERFLOW
 * (skb:kfree_skb, rx_sk = listener); the second is freed by
 * cookie_v4_check()/cookie_v6_check() themselves (6.9+) with a reason that
 * does not name the overflow (NO_SOCKET) and no rx_sk, so a drop from
 * there is judged by this CPU's ListenOverflows against the SYN baseline,
 * like a SYN. fentry/kprobe: *_syn_recv_sock() returning NULL with
 * ListenOverflows moved, which covers both.
 *
 * Which listener: the one the kernel's lookup picks for the segment's
 * destination (find_listener_for()), and within a SO_REUSEPORT group the
 * member whose queue matches what the counters say (the kernel picks one by
 * hash). fentry/kprobe get the listener as an argument.
 *
 * synack_retransmit: tcp:tcp_retransmit_synack, every version.
 */
#include "common.bpf.h"
#include "listen.bpf.h"

/* tcp_rcv_state_process()'s text, from /proc/kallsyms: a consume_skb() from
 * there is the SYN that tcp_conn_request() just handled. */
const volatile __u64 cfg_rsp_start = 0;
const volatile __u64 cfg_rsp_end = 0;
/* cookie_v4_check()'s and cookie_v6_check()'s: a kfree_skb() from there is
 * an ACK with a syncookie that made no connection. */
const volatile __u64 cfg_cookie4_start = 0;
const volatile __u64 cfg_cookie4_end = 0;
const volatile __u64 cfg_cookie6_start = 0;
const volatile __u64 cfg_cookie6_end = 0;

/* fentry/kprobe: the counters at tcp_conn_request()'s entry on this CPU. */
struct conn_req_entry {
	struct mibs m;
	__u64 sk;
	__u64 skb;
	__u8 ok;
	__u8 cookie_ack; /* *_syn_recv_sock(): the request is a syncookie's */
};

/* Slot 0: tcp_conn_request(); slot 1: *_syn_recv_sock(), which a Fast Open
 * SYN reaches from inside tcp_conn_request(). */
#define SLOT_CONN_REQUEST 0
#define SLOT_SYN_RECV 1

DEFINE_MAP(conn_req_entries, BPF_MAP_TYPE_PERCPU_ARRAY, __u32, struct conn_req_entry, 2);

/* SYN-ACK retransmits seen per request, exact for a request tcptrace saw
 * from its first retransmit. The kernel's req->num_retrans stands in for
 * older ones: the larger wins. It is incremented after the tracepoint
 * (inet_rtx_syn_ack(), later tcp_rtx_synack()), so it can only be low by
 * one, never high. A freed request's memory is soon another request's, so
 * an entry holds the request's ISN too and starts over when it differs. */
struct synack_count {
	__u32 n;
	__u32 isn;
};

DEFINE_MAP(synack_counts, BPF_MAP_TYPE_LRU_HASH, __u64, struct synack_count, 16384);

/* now: the counters after the SYN; before: ahead of it, NULL if unknown.
 * l: the listener found for the SYN (a SO_REUSEPORT group's member is
 * picked here, once the outcome is known). */
static __always_inline void on_syn_done(struct net *net, struct sock *l, struct sk_buff *skb,
					const struct mibs *before, const struct mibs *now, __u8 path)
{
	__u32 reason = 0, type;

	type = before ? syn_outcome(before, now, &reason) : syn_outcome_by_state(l, net, &reason);
	if (!type)
		return;
	if (type == EVENT_SYN_COOKIE && BPF_CORE_READ(net, ipv4.sysctl_tcp_syncookies) == 2)
		reason = LISTEN_SYNCOOKIES_ALWAYS;
	if (path == PATH_TRACEPOINT)
		l = pick_member(l, reason);
	listen_event(type, refine_other(l, reason), path, l, skb);
}

/* This CPU's counters of net into now. The per-CPU offset is computed once
 * per CPU from a TCP socket; after that none is needed, so the listener is
 * looked up only when the counters moved. */
static __always_inline bool read_mibs_skb(struct net *net, struct sk_buff *skb, struct mibs *now)
{
	struct sock *l;

	if (read_mibs(net, NULL, now))
		return true;
	l = skb_listener(net, skb);
	return l && read_mibs(net, l, now);
}

SEC("tp_btf/consume_skb")
int BPF_PROG(tp_consume_skb, struct sk_buff *skb, void *location)
{
	struct mibs now, zero, *base;
	const struct mibs *before;
	struct net *net;
	__u64 key;

	/* Every consumed skb on the host comes here: two compares and out. */
	if ((__u64)location < cfg_rsp_start || (__u64)location >= cfg_rsp_end)
		return 0;
	net = skb_net_trusted(skb);
	if (!net || !read_mibs_skb(net, skb, &now))
		return 0;
	key = (__u64)net;
	base = bpf_map_lookup_elem(&mib_baseline, &key);
	if (base && base->valid) {
		/* Any change at all is rare: most SYNs are accepted. */
		if (base->drops != now.drops || base->cookies != now.cookies) {
			on_syn_done(net, skb_listener(net, skb), skb, base, &now, PATH_TRACEPOINT);
			mib_store(net, base, &now);
		}
		return 0;
	}
	before = mib_before(net, base, &zero);
	on_syn_done(net, skb_listener(net, skb), skb, before, &now, PATH_TRACEPOINT);
	mib_store(net, base, &now);
	return 0;
}

/*
 * fentry/kprobe: this CPU's counters before tcp_conn_request() (which:
 * SLOT_CONN_REQUEST) or *_syn_recv_sock() (SLOT_SYN_RECV) on the listener
 * sk, parked in the function's slot with the segment for its return
 * (kretprobes see no arguments). For *_syn_recv_sock(), whether req, the
 * request it makes a child from, is a syncookie's: a request from the SYN
 * queue is hashed and holds references; the one tcp_get_cookie_sock()
 * passes for a syncookie ACK was just allocated, with none (reqsk_alloc()
 * sets rsk_refcnt to 0, every version).
 */
static __always_inline void conn_req_enter(__u32 which, struct sock *sk, struct sk_buff *skb, struct request_sock *req)
{
	__u32 slot = which;
	struct conn_req_entry *e = bpf_map_lookup_elem(&conn_req_entries, &slot);

	if (!e)
		return;
	e->sk = (__u64)sk;
	e->skb = (__u64)skb;
	if (which == SLOT_SYN_RECV)
		e->cookie_ack = BPF_CORE_READ(req, __req_common.skc_refcnt.refs.counter) == 0;
	e->ok = read_mibs(BPF_CORE_READ(sk, __sk_common.skc_net.net), sk, &e->m);
}

static __always_inline void conn_request_exit(__u8 path)
{
	__u32 slot = SLOT_CONN_REQUEST;
	struct conn_req_entry *e = bpf_map_lookup_elem(&conn_req_entries, &slot);
	struct mibs now;
	struct net *net;
	struct sock *l;

	if (!e || !e->ok)
		return;
	e->ok = 0;
	l = (struct sock *)e->sk;
	net = BPF_CORE_READ(l, __sk_common.skc_net.net);
	if (read_mibs(net, l, &now))
		on_syn_done(net, l, (struct sk_buff *)e->skb, &e->m, &now, path);
}

/* fentry_tcp_conn_request, kprobe_tcp_conn_request */
ENTRY_PROGS(tcp_conn_request, conn_req_enter(SLOT_CONN_REQUEST, sk, skb, NULL), struct request_sock_ops *rsk_ops, void *af_ops,
	    struct sock *sk, struct sk_buff *skb)
/* fexit_tcp_conn_request, kretprobe_tcp_conn_request */
RETURN_PROGS(tcp_conn_request, conn_request_exit(path))

/* A third-ACK overflow moved ListenOverflows and ListenDrops on this CPU:
 * move the SYN baseline with them, so the next SYN is not blamed. */
static __always_inline void rebase_mibs(struct sock *l)
{
	struct net *net = BPF_CORE_READ(l, __sk_common.skc_net.net);
	__u64 key = (__u64)net;
	struct mibs now;

	if (read_mibs(net, l, &now))
		mib_store(net, bpf_map_lookup_elem(&mib_baseline, &key), &now);
}

static __always_inline void on_listen_overflow(struct sock *l, struct sk_buff *skb, __u8 path, __u8 cookie_ack)
{
	rebase_mibs(l);
	listen_event_nth(EVENT_LISTEN_OVERFLOW, LISTEN_ACCEPT_QUEUE_FULL, path, l, skb, NULL, 0, cookie_ack);
}

/* An ACK with a syncookie that cookie_v4_check()/cookie_v6_check() dropped:
 * an accept-queue overflow if this CPU's ListenOverflows moved since the
 * last SYN or overflow seen here (the baseline the SYNs keep). */
static __always_inline void on_cookie_ack_dropped(struct sk_buff *skb)
{
	struct net *net = skb_net(skb);
	struct mibs now, zero, *base;
	const struct mibs *before;
	struct sock *l;
	bool overflow;
	__u64 key;

	if (!net || !read_mibs_skb(net, skb, &now))
		return;
	key = (__u64)net;
	base = bpf_map_lookup_elem(&mib_baseline, &key);
	before = mib_before(net, base, &zero);
	l = skb_listener(net, skb);
	/* No baseline on this CPU: the listener's queue decides. */
	overflow = before ? now.overflows != before->overflows : l && member_matches(l, LISTEN_ACCEPT_QUEUE_FULL);
	mib_store(net, base, &now);
	if (overflow)
		listen_event_nth(EVENT_LISTEN_OVERFLOW, LISTEN_ACCEPT_QUEUE_FULL, PATH_TRACEPOINT,
				 pick_member(l, LISTEN_ACCEPT_QUEUE_FULL), skb, NULL, 0, 1);
}

static __always_inline bool in_cookie_check(__u64 loc)
{
	return (loc >= cfg_cookie4_start && loc < cfg_cookie4_end) ||
	       (loc >= cfg_cookie6_start && loc < cfg_cookie6_end);
}

/* A dropped skb (kfree_skb's program is shared, in tcptrace.bpf.c): every
 * one on the host comes here, a compare or two and out. The reason's value
 * is the running kernel's, by name (the enum is renumbered between
 * versions); the shared program also loads on 6.11-6.14, for paws_reject,
 * where TCP_LISTEN_OVERFLOW does not exist yet. */
static __shared_hook void listen_kfree_skb(struct sk_buff *skb, void *location, __u32 reason, struct sock *rx_sk)
{
	if (IS_DROP_REASON(reason, SKB_DROP_REASON_TCP_LISTEN_OVERFLOW)) {
		if (rx_sk)
			on_listen_overflow(rx_sk, skb, PATH_TRACEPOINT, 0);
		return;
	}
	if (in_cookie_check((__u64)location))
		on_cookie_ack_dropped(skb);
}

/* fentry/kprobe: the child could not be made; ListenOverflows says why. */
static __always_inline void syn_recv_exit(void *child, __u8 path)
{
	__u32 slot = SLOT_SYN_RECV;
	struct conn_req_entry *e = bpf_map_lookup_elem(&conn_req_entries, &slot);
	struct sock *l;
	struct mibs now;

	if (!e || !e->ok || child)
		return;
	e->ok = 0;
	l = (struct sock *)e->sk;
	if (!read_mibs(BPF_CORE_READ(l, __sk_common.skc_net.net), l, &now) || now.overflows == e->m.overflows)
		return;
	on_listen_overflow(l, (struct sk_buff *)e->skb, path, e->cookie_ack);
}

/* fexit finds the return value after the last argument, and the verifier
 * wants a constant context offset: one program per argument count (BTF
 * says which the kernel has; the probe table loads that one). */
#define SYN_RECV_FEXIT(fn, name, ret_index)                          \
	SEC("fexit/" #fn)                                            \
	int name(__u64 *ctx)                                         \
	{                                                            \
		syn_recv_exit((void *)ctx[ret_index], PATH_FENTRY);  \
		return 0;                                            \
	}

/* The programs on one of tcp_v4_syn_recv_sock and tcp_v6_syn_recv_sock
 * (<fn>): fentry_<fn>, kprobe_<fn>; fexit_<fn> (7 arguments),
 * fexit_<fn>_6args; kretprobe_<fn>. */
#define SYN_RECV_PROGS(fn)                                                                        \
	ENTRY_PROGS(fn, conn_req_enter(SLOT_SYN_RECV, sk, skb, req), struct sock *sk,             \
		    struct sk_buff *skb, struct request_sock *req)                                \
	SYN_RECV_FEXIT(fn, fexit_##fn, 7)                                                         \
	SYN_RECV_FEXIT(fn, fexit_##fn##_6args, 6)                                                 \
	ONE_CALL_PROG("kretprobe/" #fn, kretprobe_##fn, BPF_KRETPROBE, PATH_KPROBE,               \
		      syn_recv_exit(ret, path), void *ret)

SYN_RECV_PROGS(tcp_v4_syn_recv_sock)
SYN_RECV_PROGS(tcp_v6_syn_recv_sock)

/* tcp:tcp_retransmit_synack(sk = listener, req), from the request's timer.
 * acked: the final ACK came but the accept queue was full (tcp_check_req's
 * listen_overflow sets it); otherwise the ACK never came. */
SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(tp_tcp_retransmit_synack, struct sock *sk, struct request_sock *req)
{
	__u8 acked = BPF_CORE_READ_BITFIELD_PROBED((struct inet_request_sock *)req, acked);
	struct synack_count first = { .n = 1, .isn = BPF_CORE_READ((struct tcp_request_sock *)req, snt_isn) };
	__u32 seen = 1, kernel = BPF_CORE_READ(req, num_retrans);
	__u64 rk = (__u64)req;
	struct synack_count *c = bpf_map_lookup_elem(&synack_counts, &rk);

	/* Counted on every retransmit, aggregated or not. One timer per
	 * request: no race on its count. */
	if (c && c->isn == first.isn) {
		c->n += 1;
		seen = c->n;
	} else
		bpf_map_update_elem(&synack_counts, &rk, &first, BPF_ANY);
	listen_event_nth(EVENT_SYNACK_RETRANSMIT, acked ? LISTEN_ACCEPT_QUEUE_FULL : LISTEN_NO_FINAL_ACK,
			 PATH_TRACEPOINT, sk, NULL, req, seen > kernel ? seen : kernel, 0);
	return 0;
}
