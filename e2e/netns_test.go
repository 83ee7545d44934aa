package e2e

import (
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"
	"time"
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
	n := &netns{t: t, name: fmt.Sprintf("tcptrace-e2e-%d", rand.Uint32())}
	run(t, "ip", "netns", "add", n.name)
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
