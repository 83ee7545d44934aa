package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// netns is a network namespace made for one test, with loopback up. All
// traffic of a test stays on that namespace's own loopback.
type netns struct {
	t    testing.TB
	name string
	made time.Time
}

func newNetns(t testing.TB) *netns {
	t.Helper()
	return newNetnsOnCPU(t, -1)
}

// newNetnsOnCPU makes the namespace from a process pinned to cpu (-1: any):
// the kernel hands a new namespace its cookie from that CPU's batch.
func newNetnsOnCPU(t testing.TB, cpu int) *netns {
	t.Helper()
	n := &netns{t: t, name: fmt.Sprintf("tcptrace-e2e-%d", rand.Uint32())}
	if cpu >= 0 {
		// Pinned from a thread of its own, which the child inherits
		// (the VMs' busybox taskset would run its own ip applet).
		done := make(chan error, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with its affinity
			var one unix.CPUSet
			one.Set(cpu)
			if err := unix.SchedSetaffinity(0, &one); err != nil {
				done <- err
				return
			}
			if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
				done <- fmt.Errorf("ip netns add %s on CPU %d: %v: %s", n.name, cpu, err, out)
				return
			}
			done <- nil
		}()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	} else {
		run(t, "ip", "netns", "add", n.name)
	}
	n.made = time.Now()
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.name).Run() })
	n.run("ip", "link", "set", "lo", "up")
	return n
}

// run runs a command inside the namespace and fails the test if it fails.
func (n *netns) run(args ...string) string {
	n.t.Helper()
	return run(n.t, append([]string{"ip", "netns", "exec", n.name}, args...)...)
}

// dropToPort cuts the path to a port: every segment sent to it is dropped
// on arrival (input hook), after the sender has transmitted it, so the
// sender sees what it sees on a dead path: data in flight, never
// acknowledged. (A drop in the output hook would fail the transmit itself,
// and TCP would keep the data unsent instead.)
func (n *netns) dropToPort(port int) {
	n.t.Helper()
	n.nft(fmt.Sprintf(`table ip tcptrace_e2e {
		chain in { type filter hook input priority 0; tcp dport %d drop; }
	}`, port))
}

// dropNonSYNTo lets only SYNs reach a port: handshakes stop half-open
// (the final ACK never arrives) and nothing else gets through.
func (n *netns) dropNonSYNTo(port int) {
	n.t.Helper()
	n.nft(fmt.Sprintf(`table ip tcptrace_e2e {
		chain in { type filter hook input priority 0; tcp dport %d tcp flags & syn == 0 drop; }
	}`, port))
}

func (n *netns) nft(ruleset string) {
	n.t.Helper()
	cmd := exec.Command("ip", "netns", "exec", n.name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		n.t.Fatalf("nft: %v: %s", err, out)
	}
}

func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// cookie is the namespace's net_cookie (SO_NETNS_COOKIE, 5.14+), 0 where
// the kernel has none. Read from a thread that enters the namespace and is
// thrown away with its goroutine.
func (n *netns) cookie() uint64 {
	n.t.Helper()
	out := make(chan uint64, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends in n
		f, err := os.Open("/run/netns/" + n.name)
		if err != nil {
			out <- 0
			return
		}
		defer f.Close()
		if unix.Setns(int(f.Fd()), unix.CLONE_NEWNET) != nil {
			out <- 0
			return
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			out <- 0
			return
		}
		defer unix.Close(fd)
		c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		if err != nil {
			c = 0
		}
		out <- c
	}()
	return <-out
}
