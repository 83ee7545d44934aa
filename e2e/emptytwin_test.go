package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// An empty twin is `return 0` attached where one of tcptrace's programs
// is, by the same mechanism: what any program there costs (the floor the
// churn benchmark compares tcptrace's programs with). A BTF tracepoint's
// twin is a tp_btf program; a function's, an fentry or fexit program, or a
// kprobe or kretprobe: the paths of kernels without the tracepoints, and
// of those that refuse trampolines.
type twinKind string

const (
	twinTracepoint twinKind = "tp_btf"
	twinFentry     twinKind = "fentry"
	twinFexit      twinKind = "fexit"
	twinKprobe     twinKind = "kprobe"
	twinKretprobe  twinKind = "kretprobe"
)

// emptyTwin loads an empty program of kind and attaches it to target (a
// tracepoint's or a kernel function's name).
func emptyTwin(b *testing.B, kind twinKind, target string) (*ebpf.Program, link.Link) {
	spec := &ebpf.ProgramSpec{
		Name:         "empty_floor",
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		AttachTo:     target,
	}
	switch kind {
	case twinTracepoint:
		spec.Type, spec.AttachType = ebpf.Tracing, ebpf.AttachTraceRawTp
	case twinFentry:
		spec.Type, spec.AttachType = ebpf.Tracing, ebpf.AttachTraceFEntry
	case twinFexit:
		spec.Type, spec.AttachType = ebpf.Tracing, ebpf.AttachTraceFExit
	case twinKprobe, twinKretprobe:
		spec.Type, spec.AttachTo = ebpf.Kprobe, ""
	default:
		b.Fatalf("empty twin of kind %q", kind)
	}
	prog, err := ebpf.NewProgram(spec)
	if err != nil {
		b.Fatalf("empty %s program on %s: %v", kind, target, err)
	}
	var l link.Link
	switch kind {
	case twinKprobe:
		l, err = link.Kprobe(target, prog, nil)
	case twinKretprobe:
		l, err = link.Kretprobe(target, prog, nil)
	default:
		l, err = link.AttachTracing(link.TracingOptions{Program: prog})
	}
	if err != nil {
		prog.Close()
		b.Fatalf("attaching the empty %s program to %s: %v", kind, target, err)
	}
	return prog, l
}

// kprobeTarget is the function a kprobe program of tcptrace's is on, from
// its name (kprobe_<function>, kretprobe_<function>); ok false for a name
// that is not a kernel function's (a program on another symbol, such as
// kretprobe_loss_probe_retransmit): it gets no twin.
func kprobeTarget(name string, kallsyms map[string]bool) (twinKind, string, bool) {
	for _, k := range []twinKind{twinKretprobe, twinKprobe} {
		if fn, ok := strings.CutPrefix(name, string(k)+"_"); ok {
			return k, fn, kallsyms[fn]
		}
	}
	return "", "", false
}

// kernelFunctions is the set of text symbols in /proc/kallsyms.
func kernelFunctions(b *testing.B) map[string]bool {
	data, err := os.ReadFile("/proc/kallsyms")
	if err != nil {
		b.Fatal(err)
	}
	fns := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && (f[1] == "t" || f[1] == "T") {
			fns[f[2]] = true
		}
	}
	return fns
}

// hookName is a hook's row in the benchmark's table: a tracepoint's name
// as before, a function's with its kind ("fexit/tcp_conn_request").
func hookName(kind twinKind, target string) string {
	if kind == twinTracepoint {
		return target
	}
	return fmt.Sprintf("%s/%s", kind, target)
}
