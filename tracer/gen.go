package tracer

// bpf2go compiles bpf/tcptrace.bpf.c for amd64 (the kprobe wrappers need the
// target's pt_regs layout, and bpf/vmlinux.h is amd64's) and generates Go mirrors of the event ABI
// in bpf/tcptrace.h (-type), so that C and Go share one definition. -g keeps
// BTF, which CO-RE and the verifier's messages need; bpf2go strips the DWARF.
// The outputs (tcptrace_*_bpfel.go and .o) are committed so that `go build`
// needs no clang; `make generate` reruns this and CI checks the result.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64 -type event -type agg_key -type agg_value -type tcp_snapshot -type listen_snapshot -type ack_snapshot -type conn_snapshot -type rtx_snapshot -type owner tcptrace ../bpf/tcptrace.bpf.c -- -I../bpf
