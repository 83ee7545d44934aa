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
	EVENT_SEND_EAGAIN = 1,        /* a send on a TCP socket returned -EAGAIN */
	EVENT_SEND_BLOCKED = 2,       /* a blocking send slept waiting for send-buffer space */
	EVENT_SYN_DROP = 3,           /* tcp_conn_request() dropped a SYN */
	EVENT_SYN_COOKIE = 4,         /* tcp_conn_request() answered a SYN with a syncookie */
	EVENT_LISTEN_OVERFLOW = 5,    /* a handshake's final ACK was dropped: accept queue full */
	EVENT_SYNACK_RETRANSMIT = 6,  /* a listener retransmitted a SYN-ACK */
	EVENT_DELAYED_ACK = 7,        /* a delayed-ACK timer fired and sent the ACK it held */
	EVENT_NAGLE_STALL = 8,        /* Nagle held a small segment behind an unacknowledged one */
	EVENT_NAGLE_DELACK_STALL = 9, /* ... until the peer's delayed-ACK timer released it */
	EVENT_SYN_RETRANSMIT = 10,    /* a connecting socket retransmitted its SYN */
	EVENT_CONNECT_TIMEOUT = 11,   /* connect() gave up: ETIMEDOUT */
	EVENT_CONNECT_REFUSED = 12,   /* a reset answered the SYN: ECONNREFUSED */
	EVENT_PORT_EXHAUSTION = 13,   /* no free local port: EADDRNOTAVAIL */
	EVENT_TIMEWAIT_OVERFLOW = 14, /* tcp_max_tw_buckets hit: a socket skipped TIME_WAIT */
	EVENT_PAWS_REJECT = 15,       /* a segment dropped by a PAWS/timestamp check */
	EVENT_RESET = 16,             /* a reset sent or received on a connection */
	EVENT_RETRANSMIT = 17,        /* segments retransmitted on a synchronized connection */
	EVENT_RTO_STALL = 18,         /* the peer's segments arrive while our data waits for the backed-off RTO */
	EVENT_TYPE_MAX = 19,
};

/* Why a listener event happened, decided in the kernel from the kernel's own
 * counters (see bpf/listen.bpf.c). */
enum listen_reason {
	LISTEN_REASON_NONE = 0,
	LISTEN_ACCEPT_QUEUE_FULL = 1, /* LINUX_MIB_LISTENOVERFLOWS moved */
	LISTEN_SYN_QUEUE_FULL = 2,    /* LINUX_MIB_TCPREQQFULLDROP or ..DOCOOKIES moved */
	LISTEN_UNPROVEN_PEER = 3,     /* dropped by the last-quarter rule of tcp_max_syn_backlog */
	LISTEN_OTHER = 4,             /* LINUX_MIB_LISTENDROPS alone: no memory, no route, LSM */
	LISTEN_SYNCOOKIES_ALWAYS = 5, /* tcp_syncookies=2: every SYN gets a cookie */
	LISTEN_NO_FINAL_ACK = 6,      /* a SYN-ACK retransmit: the client's final ACK never came */
};

/* Bits of hooks_on (bpf/common.bpf.h): which detectors the programs on the
 * busiest hooks work for. Those hooks run on every send, every TCP state
 * change and every timer of the host, so one program per hook serves every
 * detector that needs it (bpf/tcptrace.bpf.c). */
enum shared_hook {
	HOOK_SEND_EAGAIN = 1, /* send_eagain, any path */
	HOOK_SEND_WAIT = 2,   /* send_blocked's tracepoint path: a wait ends with the call */
	HOOK_NAGLE = 4,       /* nagle_stall: bytes left unsent */
	HOOK_OWNERS = 8,      /* socket owners at listen(), connect(), accept (inet_sock_set_state) */
	HOOK_CONNECT = 16,    /* syn_retransmit/connect_*: SYN_SENT entered and left */
	HOOK_PORTS = 32,      /* port_exhaustion: SYN_SENT to CLOSE without a local port */
	HOOK_TIMEWAIT = 64,   /* timewait_overflow: a close without a TIME_WAIT timer armed */
	HOOK_DELACK = 128,    /* delayed_ack: the delayed-ACK timer armed (timer_start) */
	HOOK_RETRANSMIT = 256, /* retransmit: tcp_retransmit_skb past the handshake */
	HOOK_SYN_RTX = 512,    /* syn_retransmit: tcp_retransmit_skb in SYN_SENT, any path */
	HOOK_RTO_STALL = 1024, /* rto_stall: a segment received (tcp_probe) while in RTO backoff */
	HOOK_LISTEN_OVERFLOW = 2048, /* listen_overflow's tracepoint path: a dropped skb (kfree_skb) */
	HOOK_PAWS = 4096,      /* paws_reject: a dropped skb with its socket (kfree_skb, 6.11+) */
};

/* rto_stall's two lines, the aggregation sub-key and the Go reason. */
enum rto_stall_kind {
	RTO_STALL_WAITING = 0,   /* the peer is heard, our data waits for the timer */
	RTO_STALL_RECOVERED = 1, /* a segment acknowledged the data again */
};

/* What sent a retransmission (bpf/retransmit.bpf.c decides). The two queue
 * kinds are what the kernel counts in TCPFastRetrans and
 * TCPSlowStartRetrans, segment for segment. */
enum rtx_kind {
	RTX_OTHER = 0,
	RTX_TIMEOUT = 1,    /* the retransmission timer fired: the head of the queue again */
	RTX_LOSS_PROBE = 2, /* a tail loss probe resent the last segment */
	RTX_FAST = 3,       /* loss recovery from ACKs (duplicate ACKs, SACK, RACK): TCPFastRetrans */
	RTX_SLOW_START = 4, /* the queue resent in slow start after a timeout or a path-MTU drop: TCPSlowStartRetrans */
};

/* What the kernel lets a user set of the RTO ceiling (6.15+; TCP_RTO_MAX,
 * 120 s, fixed before): read_snapshot() tells by the fields' existence. */
enum rto_max_knob {
	RTO_MAX_SOCKOPT = 1, /* TCP_RTO_MAX_MS (icsk_rto_max) */
	RTO_MAX_SYSCTL = 2,  /* net.ipv4.tcp_rto_max_ms (sysctl_tcp_rto_max_ms) */
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
 * flight happens once, in Go, where HZ is known.
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
	__u8 rto_max_knobs;  /* enum rto_max_knob bits: the kernel's settings for the RTO ceiling */
	__u8 _pad[1];
};

/*
 * A listener and one client at the moment of a listener event. The
 * listener's owner is in the event's pid and comm: these events happen in
 * softirq and timer context, so the task that happens to run is nobody's.
 */
struct listen_snapshot {
	__u64 sk;                /* the listener */
	__u32 netns;
	__u32 ino;               /* the listener's socket inode */
	__u8 laddr[16];          /* the address the client connected to */
	__u8 raddr[16];          /* the client */
	__u16 lport;
	__u16 rport;
	__u16 family;
	__u8 reason;             /* enum listen_reason */
	__u8 syncookies;         /* net.ipv4.tcp_syncookies of the netns */
	__u8 abort_on_overflow;  /* net.ipv4.tcp_abort_on_overflow of the netns */
	__u8 owner_known;        /* pid/comm are the listener's owner */
	__u8 req_acked;          /* synack_retransmit: the final ACK came and was dropped */
	__u8 listening;          /* the listener was found (fields below are real) */
	__u32 retransmits;       /* synack_retransmit: SYN-ACK retransmits of this request */
	__u32 accept_queue;      /* sk_ack_backlog: connections waiting for accept() */
	__u32 accept_queue_max;  /* sk_max_ack_backlog: min(listen() backlog, somaxconn) */
	__u32 syn_queue;         /* icsk_accept_queue.qlen: requests waiting for the final ACK */
	__u32 max_syn_backlog;   /* net.ipv4.tcp_max_syn_backlog */
	__u32 somaxconn;         /* net.core.somaxconn */
	__u32 drops;             /* sk_drops of the listener */
	__u8 cookie_ack;         /* listen_overflow: the ACK carried a syncookie (no request existed) */
	__u8 _pad[3];
};

/*
 * The delayed-ACK and Nagle side of a connection (delayed_ack, nagle_stall,
 * nagle_delack_stall). The connection itself is in the event's tcp_snapshot.
 */
struct ack_snapshot {
	__u64 held_ns;        /* delayed_ack: from the timer's arming to its firing; 0 = unknown */
	__u64 peer_held_ns;   /* nagle_delack_stall: how long the peer's timer held its ACK */
	__u64 peer_fired_ns;  /* nagle_delack_stall: when the peer's timer fired (ktime) */
	__u32 ato;            /* icsk_ack.ato at the firing, jiffies */
	__u32 unacked_bytes;  /* rcv_nxt - rcv_wup: received and not yet acknowledged */
	__u32 rcv_mss;        /* icsk_ack.rcv_mss: the peer's segment size as estimated */
	__u32 held_bytes;     /* nagle: bytes written and held back (write_seq - snd_nxt) */
	__u32 small_inflight; /* nagle: unacknowledged bytes when the write was held */
	__u32 ack_payload;    /* nagle: payload of the segment whose ACK released the data */
	__u32 peer_pid;       /* nagle_delack_stall: owner of the peer socket */
	__u32 peer_ato;       /* jiffies */
	__u8 peer_comm[TASK_COMM_LEN];
	__u8 pingpong;        /* icsk_ack.pingpong before the firing */
	__u8 in_pingpong;     /* the handler treated the connection as interactive */
	__u8 quick;           /* icsk_ack.quick: quick ACKs left */
	__u8 pending;         /* icsk_ack.pending: ICSK_ACK_SCHED 1, _TIMER 2, _PUSHED 4, ... */
	__u8 peer_in_pingpong;
	__u8 peer_owner_known;
	__u8 owner_known;     /* pid/comm are the socket's owner (timer context) */
	__u8 _pad;
};

/* Which of a conn_snapshot's kernel settings were read (bit mask). */
enum conn_limits {
	LIMIT_SYN = 1,         /* syn_retries, syncnt, user_timeout_ms, rto */
	LIMIT_SYN_LINEAR = 2,  /* syn_linear_timeouts: the kernel has it (6.5+) */
	LIMIT_PORTS = 4,       /* port_lo, port_hi, tw_reuse */
	LIMIT_TW = 8,          /* tw_count, max_tw_buckets */
};

/*
 * One connection (or the segment that concerned it) at a set-up or teardown
 * event: connect() outcomes, port exhaustion, TIME_WAIT overflow, PAWS,
 * resets. These happen in timer or softirq context as often as not, so pid
 * and comm are the connection's owner when owner_known is set. Kernel units
 * (jiffies) where the kernel keeps them; Go converts with HZ.
 */
struct conn_snapshot {
	__u64 sk;                /* the socket (full, TIME_WAIT or request) */
	__u64 elapsed_ns;        /* since connect() put it in SYN_SENT (start_known) */
	__u32 netns;
	__u32 ino;               /* socket inode (full sockets only) */
	__u8 saddr[16];          /* local address; IPv4 in the first 4 bytes */
	__u8 daddr[16];          /* remote address */
	__u16 sport;             /* host byte order */
	__u16 dport;
	__u16 family;
	__u8 state;              /* TCP state at the event */
	__u8 owner_known;        /* pid/comm are the connection's owner */
	__u8 start_known;        /* tcptrace saw the connect(): elapsed_ns, syn_rtx real */
	__u8 limits_known;       /* enum conn_limits */
	__u8 syn_retries;        /* net.ipv4.tcp_syn_retries of the namespace */
	__u8 syncnt;             /* TCP_SYNCNT (icsk_syn_retries); 0 = the sysctl */
	__u8 syn_linear_timeouts; /* net.ipv4.tcp_syn_linear_timeouts (6.5+) */
	__u8 retransmits;        /* icsk_retransmits */
	__u8 tw_reuse;           /* net.ipv4.tcp_tw_reuse */
	__u8 side;               /* reset: 1 sent by this host, 2 received */
	__u32 syn_rtx;           /* SYN retransmits of this connect() so far */
	__u32 user_timeout_ms;   /* TCP_USER_TIMEOUT; 0 = none */
	__u32 rto;               /* icsk_rto, jiffies */
	__u32 rto_max;           /* icsk_rto_max, jiffies (6.15+); 0 = TCP_RTO_MAX */
	__u32 port_lo;           /* net.ipv4.ip_local_port_range */
	__u32 port_hi;
	__u32 tw_count;          /* TIME_WAIT sockets in the namespace */
	__u32 max_tw_buckets;    /* net.ipv4.tcp_max_tw_buckets */
	__u32 drop_reason;       /* paws_reject: enum skb_drop_reason (named in Go, from BTF) */
	__u32 tsval;             /* paws_reject: the segment's timestamp */
	__u32 tsecr;
	__u32 ts_recent;         /* paws_reject: the newest timestamp the socket holds */
	__u8 ts_seen;            /* the segment carried a timestamp option */
	__u8 ts_recent_known;
	__u8 tcp_flags;          /* paws_reject: the segment's flags (0x02 SYN) */
	__u8 rst_reason_known;
	__u32 rst_reason;        /* reset sent, 6.10+: enum sk_rst_reason */
	__u32 unacked;           /* reset: bytes sent and not acknowledged */
	__u32 unread;            /* reset: bytes received and not read */
	__u32 seq;               /* paws_reject: the segment's sequence number; syn_retransmit: the SYN's (the ISN) */
	__u8 rfc1337;            /* paws_reject: net.ipv4.tcp_rfc1337 of the refusing socket's namespace */
	__u8 rfc1337_known;
	__u8 _pad2[2];
};

/* A retransmission: what the segment was and what the connection's
 * recovery looked like. The socket's state is in the event's tcp_snapshot,
 * its owner and limits in its conn_snapshot. */
struct rtx_snapshot {
	__u32 segs;          /* segments of this retransmission (the socket's total_retrans grew by this) */
	__u32 bytes;         /* bytes of this retransmission (skb->len); a line's total is in wait_ns */
	__u32 ssthresh;      /* snd_ssthresh, packets */
	__u32 rttvar_us;     /* mdev_us, microseconds << 2 (TCP_INFO's tcpi_rttvar is mdev_us >> 2) */
	__u32 retries2;      /* net.ipv4.tcp_retries2 of the namespace */
	__s32 err;           /* 6.17+: the attempt's result; 0 before */
	__u8 kind;           /* retransmit: enum rtx_kind; rto_stall: enum rto_stall_kind */
	__u8 episode_known;  /* tcptrace saw the episode's first timeout: since_first_rto_ns is real */
	__u8 _pad[2];
	__u32 rto_max_sysctl_ms; /* net.ipv4.tcp_rto_max_ms of the namespace (RTO_MAX_SYSCTL in s.rto_max_knobs) */
	__u64 since_first_rto_ns; /* rto_stall: since the first timeout of this episode */
	__u64 since_last_rto_ns;  /* rto_stall: since the latest timeout's retransmission */
	__u64 since_heard_ns;     /* rto_stall: since the first peer segment seen in the stall (recovered: the part with the path back) */
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
	/* The cgroup (v2) of pid's task when it was recorded: the calling
	 * task's in process context, the owner's otherwise. 0: unknown. */
	__u64 cgroup;
	struct tcp_snapshot s;   /* send events */
	struct listen_snapshot l; /* listener events */
	struct ack_snapshot a;    /* delayed-ACK and Nagle events */
	struct conn_snapshot c;   /* connection set-up and teardown events */
	struct rtx_snapshot x;    /* retransmit */
};

/* Key of the in-kernel aggregation: one entry per socket and event type. */
struct agg_key {
	__u64 sk;
	__u32 type;
	__u32 sub;  /* listener events: the reason (bits 0-7), the SYN-ACK retransmit number (8-15), a syncookie ACK (24); reset: the owner's tgid; delayed_ack: 1 if the held time is unknown: each has its line */
	/* Events aggregated per destination or peer: its address (IPv4 in
	 * the first 4 bytes), zero otherwise. The whole address, not a fold:
	 * an IPv4 socket keeps a v4-mapped copy of its peer in skc_v6_daddr
	 * (sk_daddr_set()), so folding the two cancelled out. */
	__u8 addr[16];
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
	__u64 last_ns;    /* the latest occurrence: the time of the next line */
	struct event ev;  /* the latest snapshot, for the periodic line */
};

#endif /* TCPTRACE_H */
