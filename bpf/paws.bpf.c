/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Detector paws: paws_reject.
 *
 * skb:kfree_skb with the drop reasons TCP_RFC7323_PAWS (5.19, PAWSEstab),
 * TCP_RFC7323_PAWS_ACK (6.14, PAWSOldAck), TCP_RFC7323_TSECR (6.15,
 * TSEcrRejected) and TCP_RFC7323_TW_PAWS (6.16, PAWSTimewait), all resolved
 * by name. The segment's addresses and TSval come from its headers; the
 * socket that refused it (rx_sk, 6.11+) gives the timestamp it holds. The
 * segment's sequence number and the namespace's tcp_rfc1337 go with it: user
 * space ties a SYN to the client's syn_retransmit by that number (the
 * client's ISN, which NAT leaves alone).
 */
#include "common.bpf.h"
#include "owners.bpf.h"
#include "conn.bpf.h"

/* The drop reasons of timestamp checks, by name: enum values shift between
 * versions. */
static __always_inline bool paws_reason(__u32 reason)
{
	return IS_DROP_REASON(reason, SKB_DROP_REASON_TCP_RFC7323_PAWS) ||
	       IS_DROP_REASON(reason, SKB_DROP_REASON_TCP_RFC7323_TW_PAWS) ||
	       IS_DROP_REASON(reason, SKB_DROP_REASON_TCP_RFC7323_PAWS_ACK) ||
	       IS_DROP_REASON(reason, SKB_DROP_REASON_TCP_RFC7323_TSECR);
}

#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_TIMESTAMP 8

/* A received segment's addresses, from its IP header ip (struct iphdr or
 * ipv6hdr): local is where it was sent, remote where it came from. A
 * macro, so that the copy knows the header's type and so its alignment:
 * BPF has no unaligned loads, and through a void pointer clang copies byte
 * by byte. */
#define SEGMENT_ADDRS(c, fam, ip)                                                 \
	do {                                                                      \
		(c)->family = fam;                                                \
		__builtin_memcpy((c)->saddr, &(ip).daddr, sizeof((ip).daddr));    \
		__builtin_memcpy((c)->daddr, &(ip).saddr, sizeof((ip).saddr));    \
	} while (0)

/* The segment's addresses (local = its destination), flags and TSval/TSecr,
 * from its headers: the receive path keeps the network and transport
 * header offsets. */
static __always_inline bool read_segment(struct sk_buff *skb, struct conn_snapshot *c)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	unsigned char *opts;
	struct tcphdr t;
	__u8 ver = 0;
	int len, i;

	if (bpf_probe_read_kernel(&ver, 1, head + nh))
		return false;
	ver >>= 4;
	if (ver == 4) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh))
			return false;
		SEGMENT_ADDRS(c, AF_INET, ip);
	} else if (ver == 6) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh))
			return false;
		SEGMENT_ADDRS(c, AF_INET6, ip6);
	} else {
		return false;
	}
	if (bpf_probe_read_kernel(&t, sizeof(t), head + th))
		return false;
	c->sport = bpf_ntohs(t.dest);
	c->dport = bpf_ntohs(t.source);
	c->seq = bpf_ntohl(t.seq);
	c->tcp_flags = ((__u8 *)&t)[13];
	len = t.doff * 4 - (int)sizeof(t);
	if (len <= 0 || len > 40)
		return true;
	opts = head + th + sizeof(t);
	/* Bounded for the verifier: at most 40 bytes of options. Each byte is
	 * read from the packet, not indexed in a stack copy: the verifier
	 * cannot follow a variable index into the stack. Only a PAWS drop
	 * gets here. */
	for (i = 0; i < 40 && i < len;) {
		__u8 kind = 0, olen = 0;

		if (bpf_probe_read_kernel(&kind, 1, opts + i))
			break;
		if (kind == TCPOPT_EOL)
			break;
		if (kind == TCPOPT_NOP) {
			i++;
			continue;
		}
		if (bpf_probe_read_kernel(&olen, 1, opts + i + 1) || olen < 2)
			break;
		if (kind == TCPOPT_TIMESTAMP) {
			__u32 ts[2];

			if (olen != 10 || i + 10 > len || bpf_probe_read_kernel(ts, sizeof(ts), opts + i + 2))
				break;
			c->tsval = bpf_ntohl(ts[0]);
			c->tsecr = bpf_ntohl(ts[1]);
			c->ts_seen = 1;
			break;
		}
		i += olen;
	}
	return true;
}

/* The timestamp the refusing socket holds for its peer. */
static __always_inline void read_ts_recent(struct sock *sk, struct conn_snapshot *c)
{
	__u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);

	if (state == TCP_TIME_WAIT) {
		struct tcp_timewait_sock *tw = (void *)sk;

		c->ts_recent = BPF_CORE_READ(tw, tw_ts_recent);
		c->ts_recent_known = 1;
	} else if (state != TCP_NEW_SYN_RECV && state != TCP_LISTEN) {
		struct tcp_sock *tp = (void *)sk;

		c->ts_recent = BPF_CORE_READ(tp, rx_opt.ts_recent);
		c->ts_recent_known = 1;
	}
}

static __always_inline void on_paws(struct sk_buff *skb, __u32 reason, struct sock *rx_sk, __u8 path)
{
	struct conn_snapshot c = {};
	struct agg_key key = { .type = EVENT_PAWS_REJECT };
	SCRATCH_EVENT(t);
	struct sock *owner_sk;
	struct net *net;

	if (!read_segment(skb, &c))
		return;
	if (cfg_family && c.family != cfg_family)
		return;
	if (cfg_port && c.sport != cfg_port && c.dport != cfg_port)
		return;
	c.drop_reason = reason;
	if (rx_sk) {
		c.sk = (__u64)rx_sk;
		c.state = BPF_CORE_READ(rx_sk, __sk_common.skc_state);
		net = BPF_CORE_READ(rx_sk, __sk_common.skc_net.net);
		c.netns = BPF_CORE_READ(net, ns.inum);
		read_ts_recent(rx_sk, &c);
	} else {
		net = skb_net(skb);
		if (net)
			c.netns = BPF_CORE_READ(net, ns.inum);
	}
	/* tcp_rfc1337 decides what the refused client's reset does to a
	 * TIME_WAIT socket (tcp_timewait_state_process()): 0 kills it, so the
	 * client's next SYN gets through; 1 ignores it. int before 6.1's
	 * sysctl conversions, u8 since: the probed read takes either. */
	if (net) {
		struct netns_ipv4 *ipv4 = net_ipv4(net);

		c.rfc1337 = BPF_CORE_READ_BITFIELD_PROBED(ipv4, sysctl_tcp_rfc1337);
		c.rfc1337_known = 1;
	}
	/* A full socket is its owner's; a TIME_WAIT or request socket has
	 * none left, and the process a SYN was for is the listener's. */
	owner_sk = rx_sk;
	if (!rx_sk || c.state == TCP_TIME_WAIT || c.state == TCP_NEW_SYN_RECV)
		owner_sk = find_listener_for(c.netns, c.family, c.saddr, c.sport);
	if (who_filtered() && (!owner_sk || !owner_wanted(owner_sk)))
		return;
	key.sk = c.sk ? c.sk : ((__u64)c.netns << 32 | (__u32)c.sport << 16 | c.dport);
	__builtin_memcpy(key.addr, c.daddr, sizeof(key.addr));
	t = agg_first(&key, EVENT_PAWS_REJECT, path);
	if (!t)
		return;
	__builtin_memcpy(&t->ev.c, &c, sizeof(c));
	if (owner_sk)
		t->ev.c.owner_known = fill_owner(&t->ev, owner_sk);
	agg_commit(&key, t, 0);
}

/* 6.11+, where kfree_skb passes the socket that refused the segment (may be
 * NULL), the shared program (tcptrace.bpf.c) calls on_paws(). 5.19 - 6.10:
 * no socket; addresses from the headers. kfree_skb runs for every dropped
 * packet: one or two compares and out. */
TP_PROG(kfree_skb, tp_paws_kfree_skb_nosk, if (paws_reason(reason)) on_paws(skb, reason, NULL, path),
	struct sk_buff *skb, void *location, enum skb_drop_reason reason)

/*
 * Before 6.16 a segment refused by PAWS in TIME_WAIT is freed with no drop
 * reason (only PAWSEstab moves), so the fentry and kprobe paths apply the
 * kernel's own test at the entry of tcp_timewait_state_process()
 * (net/ipv4/tcp_minisocks.c, the same in 5.10 to 6.15): a timestamp on the
 * segment, one recorded by the TIME_WAIT socket (tw_ts_recent_stamp != 0),
 * and tcp_paws_reject() with a window of 0: the segment's TSval is older
 * than tw_ts_recent, which is non-zero and less than 24 days old; a reset
 * passes once the recorded one is 60 s (TCP_PAWS_MSL) old. Only the
 * TIME_WAIT substate counts it (PAWSEstab); FIN_WAIT2 just ACKs.
 */
#define TCP_PAWS_24DAYS (60 * 60 * 24 * 24)
#define TCP_PAWS_MSL 60
#define PAWS_RECOMPUTED 0xffffffff /* drop_reason: tcptrace applied the test */

static __always_inline void on_timewait_segment(struct sock *sk, struct sk_buff *skb, __u8 path)
{
	struct tcp_timewait_sock *tcptw = (void *)sk;
	struct conn_snapshot c = {};
	__u32 recent, now_s;
	int stamp;

	if (BPF_CORE_READ((struct inet_timewait_sock *)sk, tw_substate) != TCP_TIME_WAIT)
		return;
	stamp = BPF_CORE_READ_BITFIELD_PROBED(tcptw, tw_ts_recent_stamp);
	if (!stamp || !read_segment(skb, &c) || !c.ts_seen)
		return;
	recent = BPF_CORE_READ(tcptw, tw_ts_recent);
	now_s = bpf_ktime_get_ns() / 1000000000ULL; /* ktime_get_seconds() */
	if ((__s32)(recent - c.tsval) <= 0 || !recent || (__s32)(now_s - (stamp + TCP_PAWS_24DAYS)) >= 0)
		return;
	if ((c.tcp_flags & 0x04) && (__s32)(now_s - (stamp + TCP_PAWS_MSL)) >= 0)
		return; /* an old enough reset passes */
	on_paws(skb, PAWS_RECOMPUTED, sk, path);
}

/* fentry_tcp_timewait_state_process, kprobe_tcp_timewait_state_process */
ENTRY_PROGS(tcp_timewait_state_process, on_timewait_segment((struct sock *)tw, skb, path),
	    struct inet_timewait_sock *tw, struct sk_buff *skb)
