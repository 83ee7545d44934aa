/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The event ABI shared by the BPF programs and the Go side. bpf2go -type
 * generates the Go mirror of every type named here (tracer/gen.go), so this
 * header is the one definition: change it and run `make generate`.
 *
 * Only fixed-width types: the layout must be the same for clang's BPF target
 * and for Go.
 */
#ifndef TCPTRACE_H
#define TCPTRACE_H

#define TASK_COMM_LEN 16

/* What happened. The Go side maps each to its JSON name ("send_eagain"). */
enum event_type {
	EVENT_SEND_EAGAIN = 1,  /* a send on a TCP socket returned -EAGAIN */
	EVENT_SEND_BLOCKED = 2, /* a blocking send slept waiting for send-buffer space */
	EVENT_TYPE_MAX = 3,
};

/* Which kind of hook produced an event: printed by --list-probes and kept in
 * every event so a test (and an SRE) can tell which path ran. */
enum probe_path {
	PATH_TRACEPOINT = 1,
	PATH_FENTRY = 2,
	PATH_KPROBE = 3,
};

/*
 * Everything read from one TCP socket at the moment of an event. Raw kernel
 * units (jiffies, sequence numbers): conversion to milliseconds and bytes in
 * flight happens once, in Go (tracer/decode.go), where HZ is known.
 */
struct tcp_snapshot {
	__u64 sk;            /* kernel address of struct sock: the connection key */
	__u64 now_jiffies;   /* jiffies when the snapshot was taken */
	__u64 timer_expires; /* icsk_retransmit_timer.expires (jiffies) */
	__u64 mem_pressure;  /* *sk_prot->memory_pressure: 0, or jiffies when pressure began */
	__s64 mem_allocated; /* *sk_prot->memory_allocated, pages (tcp_mem units) */
	__u32 ino;           /* inode of the socket's file: ties it to a process */
	__u32 netns;         /* inode of the socket's network namespace */
	__u8 saddr[16];      /* local address; IPv4 in the first 4 bytes */
	__u8 daddr[16];      /* remote address */
	__u16 sport;         /* host byte order */
	__u16 dport;         /* host byte order */
	__u16 family;        /* AF_INET or AF_INET6 */
	__u8 state;          /* TCP_ESTABLISHED, ... */
	__u8 userlocks;      /* SOCK_SNDBUF_LOCK (1): the application set SO_SNDBUF */
	__s32 sndbuf;        /* sk_sndbuf, bytes */
	__s32 wmem_queued;   /* sk_wmem_queued: truesize of write + retransmit queues */
	__u32 write_seq;
	__u32 snd_nxt;
	__u32 snd_una;
	__u32 snd_wnd;       /* peer's advertised window, bytes (already scaled) */
	__u32 snd_cwnd;      /* packets */
	__u32 mss_cache;
	__u32 packets_out;
	__u32 retrans_out;
	__u32 lost_out;
	__u32 sacked_out;
	__u32 srtt_us;       /* smoothed RTT << 3, microseconds */
	__u32 rcv_tstamp;    /* jiffies (32 bit) of the last ACK received */
	__u32 rto;           /* icsk_rto, jiffies */
	__u32 notsent_lowat; /* TCP_NOTSENT_LOWAT of the socket; 0 means the sysctl */
	__u32 total_retrans;
	__u8 retransmits;    /* icsk_retransmits: consecutive RTOs without an ACK */
	__u8 backoff;        /* icsk_backoff: exponential backoff of the RTO or probe0 timer */
	__u8 pending;        /* icsk_pending: ICSK_TIME_RETRANS (1), ICSK_TIME_PROBE0 (3), ... */
	__u8 probes_out;     /* unanswered zero-window probes */
	__u8 nonagle;        /* TCP_NAGLE_OFF (1) = TCP_NODELAY, TCP_NAGLE_CORK (2) */
	__u8 ca_state;       /* TCP_CA_Open, ..., TCP_CA_Loss */
	__u8 _pad[2];
};

struct event {
	__u64 ts_ns;     /* bpf_ktime_get_ns() of the latest occurrence */
	__u64 count;     /* occurrences this record stands for, >= 1 */
	__u64 wait_ns;   /* send_blocked: time spent waiting, summed over count */
	__u64 max_wait_ns;
	__u32 pid;       /* tgid of the task that made the call */
	__u32 tid;
	__u8 comm[TASK_COMM_LEN];
	__u8 type;       /* enum event_type */
	__u8 path;       /* enum probe_path */
	__u8 _pad[2];
	__s32 ret;       /* return value seen by the application, -errno */
	struct tcp_snapshot s;
};

/* Key of the in-kernel aggregation: one entry per socket and event type. */
struct agg_key {
	__u64 sk;
	__u32 type;
	__u32 _pad;
};

/*
 * Occurrences of one event on one socket that were not sent through the ring
 * buffer. The kernel only adds; user space only reads, and prints the growth
 * since its last read, so no count is lost or doubled by a race.
 */
struct agg_value {
	__u64 count;
	__u64 wait_ns;    /* send_blocked: summed wait of those occurrences */
	__u64 max_wait_ns; /* longest single wait on this socket so far */
	__u64 snap_ns;    /* when `ev` was last refreshed */
	struct event ev;  /* the latest snapshot, for the periodic line */
};

#endif /* TCPTRACE_H */
