package tracer

import (
	"errors"
	"fmt"
	"strings"
)

// The probe table: for each event, the ways the running kernel may let us see
// it, best first. The loader (load.go) takes the first path whose programs
// load and attach. Tracepoints come first because they are a stable ABI and
// the cheapest to run; fentry/fexit next (BTF trampolines, but refused under
// some lockdown configurations); kprobes last (need CONFIG_KPROBES and a
// symbol that was not inlined).

type attachKind int

const (
	attachTracing   attachKind = iota // tp_btf, fentry, fexit: target is in the section name
	attachKprobe                      // kprobe on symbol
	attachKretprobe                   // kretprobe on symbol
)

type progAttach struct {
	prog   string // program name in bpf/tcptrace.bpf.c
	kind   attachKind
	symbol string // kprobe target
}

type pathSpec struct {
	path  ProbePath
	hooks string // what --list-probes prints
	progs []progAttach
	// requires, if set, says why this kernel cannot use the path before
	// anything is loaded (nil: try it).
	requires func(*kernelFacts) error
	// enable: the bits of hooks_on (enum shared_hook) the path turns on in
	// the programs it shares with other detectors.
	enable uint32
}

// The programs on a send's return, a TCP state change and a timer's arming
// run all the time on a busy host, so the detectors that need them share one
// program per hook, each turning on its bit once its path is attached. A
// shared program appears in several paths under the same name; the loader
// attaches it once.
const (
	hookEAGAIN   = uint32(tcptraceSharedHookHOOK_SEND_EAGAIN)
	hookWait     = uint32(tcptraceSharedHookHOOK_SEND_WAIT)
	hookNagle    = uint32(tcptraceSharedHookHOOK_NAGLE)
	hookOwners   = uint32(tcptraceSharedHookHOOK_OWNERS)
	hookConnect  = uint32(tcptraceSharedHookHOOK_CONNECT)
	hookPorts    = uint32(tcptraceSharedHookHOOK_PORTS)
	hookTimewait = uint32(tcptraceSharedHookHOOK_TIMEWAIT)
	hookDelack   = uint32(tcptraceSharedHookHOOK_DELACK)
)

// detector is one set of programs; the events it produces are enabled and
// reported together.
type detector struct {
	events []EventType
	paths  []pathSpec
}

func needCounters(f *kernelFacts) error {
	if f.err != nil {
		return fmt.Errorf("cannot read the SNMP counters per CPU: %w", f.err)
	}
	return nil
}

// needListenOverflowTracepoint: the drop reason names the overflows of
// requests in the SYN queue; those of ACKs carrying a syncookie are told by
// the counters, from drops in cookie_v4_check()/cookie_v6_check(), whose
// text must be known when the kernel has them (no cookie path otherwise).
func needListenOverflowTracepoint(f *kernelFacts) error {
	if !f.listenOverflow {
		return errors.New("the kernel has no drop reason SKB_DROP_REASON_TCP_LISTEN_OVERFLOW (added in 6.15)")
	}
	if err := needCounters(f); err != nil {
		return err
	}
	if f.cookie4Start == 0 {
		return errors.New("cookie_v4_check not found in /proc/kallsyms: overflows of ACKs carrying a syncookie would not be seen")
	}
	return nil
}

func needSynDropTracepoint(f *kernelFacts) error {
	if !f.consumeLocation {
		return errors.New("skb:consume_skb does not pass its caller's address (added in 6.3)")
	}
	if err := needCounters(f); err != nil {
		return err
	}
	if f.rspStart == 0 {
		return errors.New("tcp_rcv_state_process not found in /proc/kallsyms")
	}
	return nil
}

// needSynRecvArgs: fexit reads the return value after the last argument,
// so each argument count has its own program.
func needSynRecvArgs(n uint32) func(*kernelFacts) error {
	return func(f *kernelFacts) error {
		if err := needCounters(f); err != nil {
			return err
		}
		if f.synRecvNargs != n {
			return fmt.Errorf("for kernels whose tcp_v4_syn_recv_sock takes %d arguments (this one: %d)", n, f.synRecvNargs)
		}
		return nil
	}
}

func needDelackTimer(f *kernelFacts) error {
	if err := needCounters(f); err != nil {
		return err
	}
	if f.delackTimer == 0 {
		return errors.New("tcp_delack_timer not found in /proc/kallsyms (needed to recognise the delayed-ACK timer among all timers)")
	}
	return nil
}

var detectors = []detector{
	{
		events: []EventType{SendEAGAIN},
		paths: []pathSpec{
			{PathTracepoint, "tp_btf/sock_send_length (6.3+)", []progAttach{
				{prog: "tp_sock_send_length", kind: attachTracing},
			}, nil, hookEAGAIN},
			{PathFentry, "fexit/tcp_sendmsg", []progAttach{
				{prog: "fexit_tcp_sendmsg", kind: attachTracing},
			}, nil, hookEAGAIN},
			{PathKprobe, "kprobe+kretprobe/tcp_sendmsg", []progAttach{
				{prog: "kprobe_tcp_sendmsg", kind: attachKprobe, symbol: "tcp_sendmsg"},
				{prog: "kretprobe_tcp_sendmsg", kind: attachKretprobe, symbol: "tcp_sendmsg"},
			}, nil, hookEAGAIN},
		},
	},
	{
		events: []EventType{SendBlocked},
		paths: []pathSpec{
			{PathTracepoint, "tp_btf/tcp_sendmsg_locked (6.16+) + tp_btf/sock_send_length", []progAttach{
				{prog: "tp_tcp_sendmsg_locked", kind: attachTracing},
				{prog: "tp_sock_send_length", kind: attachTracing},
			}, nil, hookWait},
			{PathFentry, "fentry+fexit/sk_stream_wait_memory", []progAttach{
				{prog: "fentry_sk_stream_wait_memory", kind: attachTracing},
				{prog: "fexit_sk_stream_wait_memory", kind: attachTracing},
			}, nil, 0},
			{PathKprobe, "kprobe+kretprobe/sk_stream_wait_memory", []progAttach{
				{prog: "kprobe_sk_stream_wait_memory", kind: attachKprobe, symbol: "sk_stream_wait_memory"},
				{prog: "kretprobe_sk_stream_wait_memory", kind: attachKretprobe, symbol: "sk_stream_wait_memory"},
			}, nil, 0},
		},
	},
	{
		events: []EventType{SynDrop, SynCookie},
		paths: []pathSpec{
			{PathTracepoint, "tp_btf/consume_skb (6.3+) from tcp_rcv_state_process, per-CPU SNMP counters", []progAttach{
				{prog: "tp_consume_skb", kind: attachTracing},
			}, needSynDropTracepoint, 0},
			{PathFentry, "fentry+fexit/tcp_conn_request, per-CPU SNMP counters", []progAttach{
				{prog: "fentry_tcp_conn_request", kind: attachTracing},
				{prog: "fexit_tcp_conn_request", kind: attachTracing},
			}, needCounters, 0},
			{PathKprobe, "kprobe+kretprobe/tcp_conn_request, per-CPU SNMP counters", []progAttach{
				{prog: "kprobe_tcp_conn_request", kind: attachKprobe, symbol: "tcp_conn_request"},
				{prog: "kretprobe_tcp_conn_request", kind: attachKretprobe, symbol: "tcp_conn_request"},
			}, needCounters, 0},
		},
	},
	{
		events: []EventType{ListenOverflow},
		paths: []pathSpec{
			{PathTracepoint, "tp_btf/kfree_skb: reason TCP_LISTEN_OVERFLOW (6.15+), and drops in cookie_v4_check/cookie_v6_check told by per-CPU SNMP counters", []progAttach{
				{prog: "tp_kfree_skb", kind: attachTracing},
			}, needListenOverflowTracepoint, 0},
			{PathFentry, "fentry+fexit/tcp_v4_syn_recv_sock, tcp_v6_syn_recv_sock", []progAttach{
				{prog: "fentry_tcp_v4_syn_recv_sock", kind: attachTracing},
				{prog: "fexit_tcp_v4_syn_recv_sock", kind: attachTracing},
				{prog: "fentry_tcp_v6_syn_recv_sock", kind: attachTracing},
				{prog: "fexit_tcp_v6_syn_recv_sock", kind: attachTracing},
			}, needSynRecvArgs(7), 0},
			{PathFentry, "fentry+fexit/tcp_v4_syn_recv_sock, tcp_v6_syn_recv_sock (6 arguments)", []progAttach{
				{prog: "fentry_tcp_v4_syn_recv_sock", kind: attachTracing},
				{prog: "fexit_tcp_v4_syn_recv_sock_6args", kind: attachTracing},
				{prog: "fentry_tcp_v6_syn_recv_sock", kind: attachTracing},
				{prog: "fexit_tcp_v6_syn_recv_sock_6args", kind: attachTracing},
			}, needSynRecvArgs(6), 0},
			{PathKprobe, "kprobe+kretprobe/tcp_v4_syn_recv_sock, tcp_v6_syn_recv_sock", []progAttach{
				{prog: "kprobe_tcp_v4_syn_recv_sock", kind: attachKprobe, symbol: "tcp_v4_syn_recv_sock"},
				{prog: "kretprobe_tcp_v4_syn_recv_sock", kind: attachKretprobe, symbol: "tcp_v4_syn_recv_sock"},
				{prog: "kprobe_tcp_v6_syn_recv_sock", kind: attachKprobe, symbol: "tcp_v6_syn_recv_sock"},
				{prog: "kretprobe_tcp_v6_syn_recv_sock", kind: attachKretprobe, symbol: "tcp_v6_syn_recv_sock"},
			}, needCounters, 0},
		},
	},
	{
		events: []EventType{DelayedACK},
		paths: []pathSpec{
			{PathTracepoint, "tp_btf/timer_start, timer_expire_entry, timer_expire_exit (callback tcp_delack_timer), per-CPU DelayedACKs", []progAttach{
				{prog: "tp_timer_start", kind: attachTracing},
				{prog: "tp_timer_expire_entry", kind: attachTracing},
				{prog: "tp_timer_expire_exit", kind: attachTracing},
			}, needDelackTimer, hookDelack},
			{PathFentry, "fentry/tcp_send_delayed_ack, fentry+fexit/tcp_delack_timer_handler, per-CPU DelayedACKs", []progAttach{
				{prog: "fentry_tcp_send_delayed_ack", kind: attachTracing},
				{prog: "fentry_tcp_delack_timer_handler", kind: attachTracing},
				{prog: "fexit_tcp_delack_timer_handler", kind: attachTracing},
			}, needCounters, 0},
			{PathKprobe, "kprobe/tcp_send_delayed_ack, kprobe+kretprobe/tcp_delack_timer_handler, per-CPU DelayedACKs", []progAttach{
				{prog: "kprobe_tcp_send_delayed_ack", kind: attachKprobe, symbol: "tcp_send_delayed_ack"},
				{prog: "kprobe_tcp_delack_timer_handler", kind: attachKprobe, symbol: "tcp_delack_timer_handler"},
				{prog: "kretprobe_tcp_delack_timer_handler", kind: attachKretprobe, symbol: "tcp_delack_timer_handler"},
			}, needCounters, 0},
		},
	},
	{
		// nagle_delack_stall also needs the delayed-ACK detector, which
		// records each firing for the peer (tracer.New attaches it).
		events: []EventType{NagleStall, NagleDelackStall},
		paths: []pathSpec{
			{PathTracepoint, "tp_btf/sock_send_length (6.3+) + tp_btf/tcp_probe", []progAttach{
				{prog: "tp_sock_send_length", kind: attachTracing},
				{prog: "tp_tcp_probe_nagle", kind: attachTracing},
			}, nil, hookNagle},
			{PathFentry, "fexit/tcp_sendmsg + tp_btf/tcp_probe", []progAttach{
				{prog: "fexit_tcp_sendmsg", kind: attachTracing},
				{prog: "tp_tcp_probe_nagle", kind: attachTracing},
			}, nil, hookNagle},
			{PathKprobe, "kprobe+kretprobe/tcp_sendmsg + tp_btf/tcp_probe", []progAttach{
				{prog: "kprobe_tcp_sendmsg", kind: attachKprobe, symbol: "tcp_sendmsg"},
				{prog: "kretprobe_tcp_sendmsg", kind: attachKretprobe, symbol: "tcp_sendmsg"},
				{prog: "tp_tcp_probe_nagle", kind: attachTracing},
			}, nil, hookNagle},
		},
	},
	{
		events: []EventType{SynackRetransmit},
		paths: []pathSpec{
			{PathTracepoint, "tp_btf/tcp_retransmit_synack", []progAttach{
				{prog: "tp_tcp_retransmit_synack", kind: attachTracing},
			}, nil, 0},
		},
	},
	{
		events: []EventType{SynRetransmit, ConnectTimeout, ConnectRefused},
		paths: []pathSpec{
			{PathTracepoint, "tp_btf/inet_sock_set_state + tp_btf/tcp_retransmit_skb (with err, 6.17+)", []progAttach{
				{prog: "tp_inet_sock_set_state", kind: attachTracing},
				{prog: "tp_tcp_retransmit_skb_err", kind: attachTracing},
			}, needRetransmitErr(true), hookConnect},
			{PathTracepoint, "tp_btf/inet_sock_set_state + tp_btf/tcp_retransmit_skb", []progAttach{
				{prog: "tp_inet_sock_set_state", kind: attachTracing},
				{prog: "tp_tcp_retransmit_skb", kind: attachTracing},
			}, needRetransmitErr(false), hookConnect},
			{PathFentry, "fentry/tcp_connect + fexit/tcp_retransmit_skb + fentry/tcp_done", []progAttach{
				{prog: "fentry_tcp_connect", kind: attachTracing},
				{prog: "fexit_tcp_retransmit_skb", kind: attachTracing},
				{prog: "fentry_tcp_done", kind: attachTracing},
			}, nil, 0},
			{PathKprobe, "kprobe/tcp_connect + kprobe+kretprobe/tcp_retransmit_skb + kprobe/tcp_done", []progAttach{
				{prog: "kprobe_tcp_connect", kind: attachKprobe, symbol: "tcp_connect"},
				{prog: "kprobe_tcp_retransmit_skb", kind: attachKprobe, symbol: "tcp_retransmit_skb"},
				{prog: "kretprobe_tcp_retransmit_skb", kind: attachKretprobe, symbol: "tcp_retransmit_skb"},
				{prog: "kprobe_tcp_done", kind: attachKprobe, symbol: "tcp_done"},
			}, nil, 0},
		},
	},
	{
		events: []EventType{PortExhaustion},
		paths: []pathSpec{
			{PathTracepoint, "tp_btf/inet_sock_set_state: SYN_SENT to CLOSE with no local port (no free port; not a bound socket's taken 4-tuple)", []progAttach{
				{prog: "tp_inet_sock_set_state", kind: attachTracing},
			}, nil, hookPorts},
			{PathFentry, "fexit/inet_hash_connect, inet6_hash_connect", []progAttach{
				{prog: "fexit_inet_hash_connect", kind: attachTracing},
				{prog: "fexit_inet6_hash_connect", kind: attachTracing},
			}, nil, 0},
			{PathKprobe, "kprobe+kretprobe/inet_hash_connect, inet6_hash_connect", []progAttach{
				{prog: "kprobe_inet_hash_connect", kind: attachKprobe, symbol: "inet_hash_connect"},
				{prog: "kretprobe_inet_hash_connect", kind: attachKretprobe, symbol: "inet_hash_connect"},
				{prog: "kprobe_inet6_hash_connect", kind: attachKprobe, symbol: "inet6_hash_connect"},
				{prog: "kretprobe_inet6_hash_connect", kind: attachKretprobe, symbol: "inet6_hash_connect"},
			}, nil, 0},
		},
	},
	{
		events: []EventType{TimewaitOverflow},
		paths: []pathSpec{
			{PathTracepoint, "tp_btf/inet_sock_set_state + tp_btf/timer_start (tw_timer_handler)", []progAttach{
				{prog: "tp_inet_sock_set_state", kind: attachTracing},
				{prog: "tp_timer_start", kind: attachTracing},
			}, needTwTimer, hookTimewait},
			{PathFentry, "fexit/inet_twsk_alloc", []progAttach{
				{prog: "fexit_inet_twsk_alloc", kind: attachTracing},
			}, nil, 0},
			{PathKprobe, "kprobe+kretprobe/inet_twsk_alloc", []progAttach{
				{prog: "kprobe_inet_twsk_alloc", kind: attachKprobe, symbol: "inet_twsk_alloc"},
				{prog: "kretprobe_inet_twsk_alloc", kind: attachKretprobe, symbol: "inet_twsk_alloc"},
			}, nil, 0},
		},
	},
	{
		events: []EventType{PawsReject},
		paths: []pathSpec{
			{PathTracepoint, "tp_btf/kfree_skb, reasons TCP_RFC7323_* incl. TW_PAWS (6.16+)", []progAttach{
				{prog: "tp_paws_kfree_skb", kind: attachTracing},
			}, needPaws(true, true), 0},
			{PathFentry, "fentry/tcp_timewait_state_process (PAWS test applied) + tp_btf/kfree_skb with rx_sk (6.11-6.15)", []progAttach{
				{prog: "fentry_tcp_timewait_state_process", kind: attachTracing},
				{prog: "tp_paws_kfree_skb", kind: attachTracing},
			}, needTimewaitPaws(true, true), 0},
			{PathFentry, "fentry/tcp_timewait_state_process (PAWS test applied) + tp_btf/kfree_skb (5.19-6.10)", []progAttach{
				{prog: "fentry_tcp_timewait_state_process", kind: attachTracing},
				{prog: "tp_paws_kfree_skb_nosk", kind: attachTracing},
			}, needTimewaitPaws(true, false), 0},
			{PathFentry, "fentry/tcp_timewait_state_process (PAWS test applied; TIME_WAIT only: no drop reasons before 5.19)", []progAttach{
				{prog: "fentry_tcp_timewait_state_process", kind: attachTracing},
			}, needTimewaitPaws(false, false), 0},
			{PathKprobe, "kprobe/tcp_timewait_state_process (PAWS test applied) + tp_btf/kfree_skb with rx_sk (6.11-6.15)", []progAttach{
				{prog: "kprobe_tcp_timewait_state_process", kind: attachKprobe, symbol: "tcp_timewait_state_process"},
				{prog: "tp_paws_kfree_skb", kind: attachTracing},
			}, needTimewaitPaws(true, true), 0},
			{PathKprobe, "kprobe/tcp_timewait_state_process (PAWS test applied) + tp_btf/kfree_skb (5.19-6.10)", []progAttach{
				{prog: "kprobe_tcp_timewait_state_process", kind: attachKprobe, symbol: "tcp_timewait_state_process"},
				{prog: "tp_paws_kfree_skb_nosk", kind: attachTracing},
			}, needTimewaitPaws(true, false), 0},
			{PathKprobe, "kprobe/tcp_timewait_state_process (PAWS test applied; TIME_WAIT only: no drop reasons before 5.19)", []progAttach{
				{prog: "kprobe_tcp_timewait_state_process", kind: attachKprobe, symbol: "tcp_timewait_state_process"},
			}, needTimewaitPaws(false, false), 0},
			{PathTracepoint, "tp_btf/kfree_skb with rx_sk, reasons TCP_RFC7323_* (6.11-6.15: not in TIME_WAIT)", []progAttach{
				{prog: "tp_paws_kfree_skb", kind: attachTracing},
			}, needPaws(false, true), 0},
			{PathTracepoint, "tp_btf/kfree_skb, reason TCP_RFC7323_PAWS (5.19-6.10: not in TIME_WAIT)", []progAttach{
				{prog: "tp_paws_kfree_skb_nosk", kind: attachTracing},
			}, needPaws(false, false), 0},
		},
	},
	{
		events: []EventType{Reset},
		paths: []pathSpec{
			{PathTracepoint, "tp_btf/tcp_send_reset (with reason, 6.10+) + tp_btf/tcp_receive_reset", []progAttach{
				{prog: "tp_tcp_send_reset_reason", kind: attachTracing},
				{prog: "tp_tcp_receive_reset", kind: attachTracing},
			}, needSendResetReason(true), 0},
			{PathTracepoint, "tp_btf/tcp_send_reset + tp_btf/tcp_receive_reset", []progAttach{
				{prog: "tp_tcp_send_reset", kind: attachTracing},
				{prog: "tp_tcp_receive_reset", kind: attachTracing},
			}, needSendResetReason(false), 0},
		},
	},
}

// ownerTracking is what listener events need besides their own hooks: who
// owns each socket, and where the listeners are (bpf/owner.bpf.c).
var ownerTracking = pathSpec{PathTracepoint, "tp_btf/inet_sock_set_state", []progAttach{
	{prog: "tp_inet_sock_set_state", kind: attachTracing},
}, nil, hookOwners}

const ownerIterProg = "iter_tcp_owners"

// ProbeStatus is what the loader decided for one detector.
type ProbeStatus struct {
	Events []EventType
	// Path is the path in use, 0 if none works.
	Path  ProbePath
	Hooks string
	// Tried lists every path tried and why it failed, in order.
	Tried []PathFailure
}

// Names lists the status's events, comma-separated.
func (s ProbeStatus) Names() string {
	var n []string
	for _, e := range s.Events {
		n = append(n, e.String())
	}
	return strings.Join(n, ",")
}

// PathFailure says why one probe path could not be used.
type PathFailure struct {
	Path  ProbePath
	Hooks string
	Err   error
	// Unsupported: the kernel lacks what the path needs (a hook, an
	// argument, a feature), as opposed to an error in tcptrace (a verifier
	// rejection) that a kernel with the feature should not show.
	Unsupported bool
}
