/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Detector retransmit: rto_stall, the part that watches received segments
 * for a connection whose data waits on a backed-off retransmission timer.
 * The episodes it watches are begun and ended by the retransmissions
 * themselves (retransmit.bpf.c).
 */
#include "common.bpf.h"
#include "conn.bpf.h"
#include "retransmit.bpf.h"

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
