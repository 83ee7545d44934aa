/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Detector nagle: nagle_stall, a small write that Nagle held back behind an
 * unacknowledged small segment, and nagle_delack_stall, the same released
 * by the peer's delayed ACK.
 *
 * Linux's Nagle is Minshall's variant (tcp_nagle_check() in tcp_output.c): a
 * segment shorter than the MSS waits while TCP_NODELAY and TCP_CORK are off
 * (tp->nonagle == 0), packets are out, and an earlier small segment is
 * unacknowledged (tp->snd_sml, the end of the last small segment sent, is
 * after snd_una). The kernel exposes no hook at the decision itself, so the
 * detector looks at the two moments around it:
 *
 *  - the hold: when a send returns (sock:sock_send_length 6.3+; fexit or
 *    kretprobe on tcp_sendmsg before), written bytes that are still unsent
 *    (write_seq != snd_nxt) in a socket where every condition above holds,
 *    and neither the congestion window nor the peer's window is what
 *    keeps them: Nagle is holding them;
 *  - the release: tcp:tcp_probe, at the top of tcp_rcv_established() for
 *    every segment a connection receives, when the segment acknowledges
 *    the small segment (ack >= snd_sml) and nothing of the held data has
 *    gone out since (snd_nxt unchanged). The held data leaves right after,
 *    in tcp_data_snd_check(). Data that leaves for another reason (the
 *    application filled a segment, set TCP_NODELAY) ends the hold without a
 *    line.
 *
 * If the peer is on this host and its delayed-ACK timer sent that ACK after
 * the hold began (delack.bpf.c records each firing by connection in
 * delack_recent), the stall is a nagle_delack_stall: the classic 40 ms.
 *
 * Limits: a hold that starts inside the kernel's own push (a send that
 * returns with nothing unsent) is not seen; corked data (TCP_CORK) is not
 * Nagle's and is left out; connections outside ESTABLISHED (no tcp_probe)
 * are not followed to the release.
 */
#include "common.bpf.h"
#include "delack.bpf.h"

/* Which results the run wants. */
const volatile __u8 cfg_emit_nagle = 1;        /* nagle_stall */
const volatile __u8 cfg_emit_nagle_delack = 1; /* nagle_delack_stall */

struct nagle_hold {
	__u64 start_ns;
	__u32 snd_nxt;  /* while snd_nxt stays here, nothing held has been sent */
	__u32 snd_sml;  /* end of the small segment in flight: its ACK releases */
	__u32 inflight; /* snd_nxt - snd_una at the hold */
	__u32 tgid;
	__u32 tid;
	__u8 comm[TASK_COMM_LEN];
	__u8 path;      /* the probe path that saw the hold */
	__u64 cgroup;   /* tgid's */
};

DEFINE_MAP(nagle_holds, BPF_MAP_TYPE_LRU_HASH, __u64, struct nagle_hold, 16384); /* key: struct sock * */

/* Entries in nagle_holds: tcp_probe, which runs for every received segment
 * of the host, leaves after one load while nothing is held. */
__u64 nagle_holders = 0;

static __always_inline bool seq_after(__u32 a, __u32 b)
{
	return (__s32)(a - b) > 0;
}

/* A send returned with bytes unsent: is Nagle what holds them? */
static __shared_hook void nagle_check(struct sock *sk, __u8 path)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	__u32 write_seq, snd_nxt, snd_una, snd_sml, mss, unsent;
	__u64 key = (__u64)sk, id;
	struct nagle_hold h = {}, *cur;

	/* nonagle is `u8 nonagle:4`: TCP_NAGLE_OFF (TCP_NODELAY), _CORK,
	 * _PUSH; 0 is plain Nagle. */
	if (BPF_CORE_READ_BITFIELD_PROBED(tp, nonagle))
		return;
	write_seq = BPF_CORE_READ(tp, write_seq);
	snd_nxt = BPF_CORE_READ(tp, snd_nxt);
	unsent = write_seq - snd_nxt;
	mss = BPF_CORE_READ(tp, mss_cache);
	if ((__s32)unsent <= 0 || unsent >= mss)
		return; /* a full segment is not held by Nagle */
	if (!BPF_CORE_READ(tp, packets_out))
		return;
	snd_una = BPF_CORE_READ(tp, snd_una);
	snd_sml = BPF_CORE_READ(tp, snd_sml);
	if (!seq_after(snd_sml, snd_una) || seq_after(snd_sml, snd_nxt))
		return; /* no small segment unacknowledged: Minshall lets it go */
	if (BPF_CORE_READ(tp, packets_out) >= BPF_CORE_READ(tp, snd_cwnd))
		return; /* congestion window */
	if (seq_after(write_seq, snd_una + BPF_CORE_READ(tp, snd_wnd)))
		return; /* the peer's window */
	id = bpf_get_current_pid_tgid();
	if (!current_wanted(id >> 32) || !sock_wanted(sk))
		return;
	cur = bpf_map_lookup_elem(&nagle_holds, &key);
	if (cur && cur->snd_nxt == snd_nxt)
		return; /* a further write joins the hold already running */
	h.start_ns = bpf_ktime_get_ns();
	h.snd_nxt = snd_nxt;
	h.snd_sml = snd_sml;
	h.inflight = snd_nxt - snd_una;
	h.tgid = id >> 32;
	h.tid = (__u32)id;
	h.path = path;
	bpf_get_current_comm(&h.comm, sizeof(h.comm));
	h.cgroup = bpf_get_current_cgroup_id();
	bpf_map_update_elem(&nagle_holds, &key, &h, BPF_ANY);
	if (!cur)
		__sync_fetch_and_add(&nagle_holders, 1);
}

static __always_inline void nagle_forget(__u64 key)
{
	if (bpf_map_delete_elem(&nagle_holds, &key) == 0)
		__sync_fetch_and_add(&nagle_holders, -1);
}

/* inet_sock_set_state (tcptrace.bpf.c): a connection that leaves ESTABLISHED
 * is no longer followed by tcp_probe, so a hold on it will never be
 * released. */
static __shared_hook void nagle_leave_established(struct sock *sk)
{
	if (nagle_holders)
		nagle_forget((__u64)sk);
}

/* A segment arrived on a connection that holds data (tcp:tcp_probe, in
 * tcptrace.bpf.c; on every path: it is in every supported kernel). */
static __shared_hook void nagle_release(struct sock *sk, struct sk_buff *skb)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	__u64 key = (__u64)sk, now, stall;
	struct nagle_hold *h = bpf_map_lookup_elem(&nagle_holds, &key);
	struct agg_key ak = { .sk = key };
	struct peer_delack *p;
	struct conn_tuple ct;
	SCRATCH_EVENT(t);
	__u8 th[14];
	__u32 ack, snd_nxt, len;

	if (!h)
		return;
	snd_nxt = BPF_CORE_READ(tp, snd_nxt);
	if (snd_nxt != h->snd_nxt || BPF_CORE_READ(tp, write_seq) == snd_nxt) {
		nagle_forget(key); /* sent for another reason: not this stall */
		return;
	}
	/* tcp_rcv_established() gets the segment with data at its TCP header. */
	if (bpf_probe_read_kernel(th, sizeof(th), BPF_CORE_READ(skb, data)))
		return;
	if (!(th[13] & TCP_FLAG_ACK))
		return;
	__builtin_memcpy(&ack, &th[8], sizeof(ack));
	ack = bpf_ntohl(ack);
	if (seq_after(h->snd_sml, ack))
		return; /* the small segment is still unacknowledged */
	now = bpf_ktime_get_ns();
	stall = now - h->start_ns;
	len = BPF_CORE_READ(skb, len);

	t = agg_template(EVENT_NAGLE_STALL);
	if (!t) {
		nagle_forget(key);
		return;
	}
	t->ev.path = h->path;
	t->ev.pid = h->tgid;
	t->ev.tid = h->tid;
	t->ev.cgroup = h->cgroup;
	__builtin_memcpy(t->ev.comm, h->comm, sizeof(t->ev.comm));
	read_snapshot(sk, &t->ev.s);
	t->ev.a.held_bytes = t->ev.s.write_seq - t->ev.s.snd_nxt;
	t->ev.a.small_inflight = h->inflight;
	t->ev.a.ack_payload = len - ((th[12] >> 4) * 4);
	t->ev.type = EVENT_NAGLE_STALL;
	conn_tuple_of(&t->ev.s, &ct, true);
	p = bpf_map_lookup_elem(&delack_recent, &ct);
	if (p && p->fired_ns >= h->start_ns && p->fired_ns <= now) {
		t->ev.type = EVENT_NAGLE_DELACK_STALL;
		t->ev.a.peer_fired_ns = p->fired_ns;
		t->ev.a.peer_held_ns = p->held_ns;
		t->ev.a.peer_ato = p->ato;
		t->ev.a.peer_pid = p->pid;
		t->ev.a.peer_in_pingpong = p->in_pingpong;
		t->ev.a.peer_owner_known = p->owner_known;
		__builtin_memcpy(t->ev.a.peer_comm, p->comm, sizeof(t->ev.a.peer_comm));
	}
	nagle_forget(key);
	if (t->ev.type == EVENT_NAGLE_STALL ? !cfg_emit_nagle : !cfg_emit_nagle_delack)
		return;
	ak.type = t->ev.type;
	if (agg_hit(&ak, stall))
		return;
	agg_commit(&ak, t, stall);
}
