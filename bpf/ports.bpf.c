/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Detector ports: port_exhaustion.
 *
 * __inet_hash_connect() returns -EADDRNOTAVAIL when no local port is free;
 * tcp_v4_connect()/tcp_v6_connect() then set CLOSE (SYN_SENT -> CLOSE,
 * sk_err 0, in the caller's process) and return the error. Tracepoint path:
 * that transition on a socket that never got a local port (inet_num and
 * inet_sport still 0): every later failure, and a close() while connecting,
 * happens with the port assigned. The only other way there is -ENOMEM for a
 * bind bucket. A bound socket whose 4-tuple is taken (also -EADDRNOTAVAIL)
 * has its port: only the fentry/kprobe path, the return value of
 * inet_hash_connect() and inet6_hash_connect(), sees it. (The connect
 * syscall's exit tracepoint would say the errno, but enabling syscall
 * tracepoints patches the syscall exit path of every task, and did crash a
 * 6.12 guest under QEMU.)
 */
#include "common.bpf.h"
#include "conn.bpf.h"

#define EADDRNOTAVAIL 99

/* ip_local_port_range: int range[2] up to 6.6, one u32 (hi << 16 | lo)
 * from 6.7 (local flavours: CO-RE will not match an int to an array).
 * tcp_tw_reuse: int, then u8 (the probed read takes either size). */
struct local_ports___packed {
	u32 range;
};

struct local_ports___pair {
	int range[2];
};

static __always_inline void read_port_limits(struct net *net, struct conn_snapshot *c)
{
	struct netns_ipv4 *ipv4 = net_ipv4(net);
	void *lp = (void *)ipv4 + bpf_core_field_offset(struct netns_ipv4, ip_local_ports);

	if (bpf_core_field_exists(struct local_ports___packed, range)) {
		__u32 v = BPF_CORE_READ((struct local_ports___packed *)lp, range);

		c->port_lo = v & 0xffff;
		c->port_hi = v >> 16;
	} else if (bpf_core_field_exists(struct local_ports___pair, range)) {
		struct local_ports___pair *p = lp;

		c->port_lo = BPF_CORE_READ(p, range[0]);
		c->port_hi = BPF_CORE_READ(p, range[1]);
	}
	c->tw_reuse = BPF_CORE_READ_BITFIELD_PROBED(ipv4, sysctl_tcp_tw_reuse);
	c->limits_known |= LIMIT_PORTS;
	read_tw_limits(net, c);
}

/* One line per destination and interval: a client spinning on connect()
 * must not flood the output. */
static __always_inline void port_exhausted(struct conn_snapshot *c, __u32 tgid, const __u8 *comm, __u8 path)
{
	struct agg_key key = {
		.sk = ((__u64)c->netns << 32) | c->dport,
		.type = EVENT_PORT_EXHAUSTION,
	};
	SCRATCH_EVENT(t);

	__builtin_memcpy(key.addr, c->daddr, sizeof(key.addr));
	t = agg_first(&key, EVENT_PORT_EXHAUSTION, path);
	if (!t)
		return;
	t->ev.ret = -EADDRNOTAVAIL;
	t->ev.pid = tgid;
	t->ev.tid = (__u32)bpf_get_current_pid_tgid();
	t->ev.cgroup = bpf_get_current_cgroup_id(); /* connect()'s caller */
	__builtin_memcpy(t->ev.comm, comm, sizeof(t->ev.comm));
	__builtin_memcpy(&t->ev.c, c, sizeof(*c));
	t->ev.c.owner_known = 1;
	agg_commit(&key, t, 0);
}

/* connect() on sk runs in its caller: *tgid. False when the filters leave
 * the caller or the socket out. */
static __always_inline bool fill_port_snapshot(struct sock *sk, struct conn_snapshot *c, __u32 *tgid)
{
	struct net *net;

	*tgid = bpf_get_current_pid_tgid() >> 32;
	if (!current_wanted(*tgid))
		return false;
	net = BPF_CORE_READ(sk, __sk_common.skc_net.net);
	if (!conn_sock_wanted(sk))
		return false;
	read_conn(sk, c);
	read_port_limits(net, c);
	return true;
}

/* SYN_SENT -> CLOSE with no error on a socket that never got a local port:
 * __inet_hash_connect() found none free. Every other state change of the
 * host leaves after two compares. */
static __shared_hook void port_set_state(struct sock *sk, int oldstate, int newstate)
{
	if (oldstate != TCP_SYN_SENT || newstate != TCP_CLOSE)
		return;
	if (sk->__sk_common.skc_num || BPF_CORE_READ((struct inet_sock *)sk, inet_sport) || BPF_CORE_READ(sk, sk_err))
		return;
	/* Zeroed here, not at the top: clang zeroes a struct where it is
	 * declared, and every state change of the host passes the top. */
	{
		struct conn_snapshot c = {};
		__u8 comm[TASK_COMM_LEN];
		__u32 tgid;

		if (!fill_port_snapshot(sk, &c, &tgid))
			return;
		bpf_get_current_comm(&comm, sizeof(comm));
		port_exhausted(&c, tgid, comm, PATH_TRACEPOINT);
	}
}

static __always_inline void on_hash_connect(struct sock *sk, int ret, __u8 path)
{
	struct conn_snapshot c = {};
	__u8 comm[TASK_COMM_LEN];
	__u32 tgid;

	if (ret != -EADDRNOTAVAIL)
		return;
	if (!fill_port_snapshot(sk, &c, &tgid))
		return;
	bpf_get_current_comm(&comm, sizeof(comm));
	port_exhausted(&c, tgid, comm, path);
}

/* fexit_inet_hash_connect, kprobe_inet_hash_connect, kretprobe_inet_hash_connect */
SOCK_RETURN_PROGS(inet_hash_connect, int ret, on_hash_connect(sk, ret, path), struct inet_timewait_death_row *dr,
		  struct sock *sk)
/* fexit_inet6_hash_connect, kprobe_inet6_hash_connect, kretprobe_inet6_hash_connect */
SOCK_RETURN_PROGS(inet6_hash_connect, int ret, on_hash_connect(sk, ret, path), struct inet_timewait_death_row *dr,
		  struct sock *sk)
