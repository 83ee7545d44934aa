package tracer

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
}

type detector struct {
	event EventType
	paths []pathSpec
}

var detectors = []detector{
	{
		event: SendEAGAIN,
		paths: []pathSpec{
			{PathTracepoint, "tp_btf/sock_send_length (6.3+)", []progAttach{
				{prog: "tp_sock_send_length", kind: attachTracing},
			}},
			{PathFentry, "fexit/tcp_sendmsg", []progAttach{
				{prog: "fexit_tcp_sendmsg", kind: attachTracing},
			}},
			{PathKprobe, "kprobe+kretprobe/tcp_sendmsg", []progAttach{
				{prog: "kprobe_tcp_sendmsg", kind: attachKprobe, symbol: "tcp_sendmsg"},
				{prog: "kretprobe_tcp_sendmsg", kind: attachKretprobe, symbol: "tcp_sendmsg"},
			}},
		},
	},
	{
		event: SendBlocked,
		paths: []pathSpec{
			{PathTracepoint, "tp_btf/tcp_sendmsg_locked (6.16+) + tp_btf/sock_send_length", []progAttach{
				{prog: "tp_tcp_sendmsg_locked", kind: attachTracing},
				{prog: "tp_sock_send_length_wait", kind: attachTracing},
			}},
			{PathFentry, "fentry+fexit/sk_stream_wait_memory", []progAttach{
				{prog: "fentry_sk_stream_wait_memory", kind: attachTracing},
				{prog: "fexit_sk_stream_wait_memory", kind: attachTracing},
			}},
			{PathKprobe, "kprobe+kretprobe/sk_stream_wait_memory", []progAttach{
				{prog: "kprobe_sk_stream_wait_memory", kind: attachKprobe, symbol: "sk_stream_wait_memory"},
				{prog: "kretprobe_sk_stream_wait_memory", kind: attachKretprobe, symbol: "sk_stream_wait_memory"},
			}},
		},
	},
}

// ProbeStatus is what the loader decided for one event.
type ProbeStatus struct {
	Event EventType
	// Path is the path in use, 0 if none works.
	Path  ProbePath
	Hooks string
	// Tried lists every path tried and why it failed, in order.
	Tried []PathFailure
}

// PathFailure says why one probe path could not be used.
type PathFailure struct {
	Path  ProbePath
	Hooks string
	Err   error
}
