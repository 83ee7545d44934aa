// Package e2e runs tcptrace against the real kernel: real sockets in network
// namespaces of their own, each pathology made to happen, and the events
// tcptrace prints checked against what the programs saw.
//
// It needs root. Outside CI it skips with a reason when not root; in CI
// (CI set) it fails instead, so that a green run always means the tests ran.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// tcptraceBin is the binary under test: $TCPTRACE_BIN, or one built here.
var tcptraceBin string

// forcePath, from $TCPTRACE_FORCE_PATH, makes every run use one probe path
// (tracepoint, fentry or kprobe): the VM matrix runs the suite once per path.
var forcePath = os.Getenv("TCPTRACE_FORCE_PATH")

func TestMain(m *testing.M) {
	// The test binary doubles as the helper programs that make the
	// pathologies happen (helpers_test.go), started in namespaces.
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	if reason := cannotRun(); reason != "" {
		if os.Getenv("CI") != "" {
			fmt.Fprintf(os.Stderr, "e2e: cannot run in CI: %s\n", reason)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "e2e: SKIP all end-to-end tests: %s\n", reason)
		os.Exit(0)
	}
	code, err := runWithBinary(m)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func cannotRun() string {
	if os.Geteuid() != 0 {
		return "not root (run as root: the tests load BPF programs and create network namespaces)"
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return "no kernel BTF at /sys/kernel/btf/vmlinux"
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not installed (make test installs it)"
		}
	}
	return ""
}

func runWithBinary(m *testing.M) (int, error) {
	if tcptraceBin = os.Getenv("TCPTRACE_BIN"); tcptraceBin != "" {
		return m.Run(), nil
	}
	dir, err := os.MkdirTemp("", "tcptrace-e2e-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	// Readable by all: TestNotRoot runs the binary as nobody.
	if err := os.Chmod(dir, 0o755); err != nil {
		return 0, err
	}
	tcptraceBin = filepath.Join(dir, "tcptrace")
	build := exec.Command("go", "build", "-o", tcptraceBin, "../cmd/tcptrace")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return 0, fmt.Errorf("building tcptrace: %w", err)
	}
	return m.Run(), nil
}
