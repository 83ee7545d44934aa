package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Helper modes for the listener tests. "server" listens with the backlog
// in $TCPTRACE_E2E_BACKLOG and never calls accept(); "clients" opens
// $TCPTRACE_E2E_COUNT connections to $TCPTRACE_E2E_PORT at once.
const (
	helperBacklogEnv = "TCPTRACE_E2E_BACKLOG"
	helperPortEnv    = "TCPTRACE_E2E_PORT"
	helperCountEnv   = "TCPTRACE_E2E_COUNT"
)

func envInt(name string) int {
	n, _ := strconv.Atoi(os.Getenv(name))
	return n
}

// listenServer prints READY and holds its listener, without accept(),
// until its standard input closes.
func listenServer() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return err
	}
	if err := unix.Listen(fd, envInt(helperBacklogEnv)); err != nil {
		return err
	}
	port, err := localPort(fd)
	if err != nil {
		return err
	}
	fmt.Printf("READY pid=%d lport=0 port=%d\n", os.Getpid(), port)
	bufio.NewReader(os.Stdin).ReadString('\n') // until EOF or any line
	fmt.Printf("RESULT done=1\n")
	return nil
}

// Layouts of several listeners on one port, as real servers run them.
const helperLayoutEnv = "TCPTRACE_E2E_LAYOUT"

// listenServers listens on one port with two sockets and never accepts:
// "dualstack": 0.0.0.0 (backlog $TCPTRACE_E2E_BACKLOG) and [::] with
// IPV6_V6ONLY (backlog 8), as nginx and Redis do by default; "reuseport":
// two SO_REUSEPORT sockets on 127.0.0.1, the first with the backlog, the
// second with 8, a SYN handled on CPU 0 going to the first and one on CPU
// 1 to the second (reuseportByCPU). It prints both sockets' inodes, the
// first as ino.
func listenServers() error {
	layout := os.Getenv(helperLayoutEnv)
	first, second := unix.AF_INET, unix.AF_INET6
	if layout == "reuseport" {
		second = unix.AF_INET
	} else if layout != "dualstack" {
		return fmt.Errorf("unknown layout %q", layout)
	}
	var fds []int
	port := 0
	for i, family := range []int{first, second} {
		fd, err := unix.Socket(family, unix.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		var sa unix.Sockaddr = &unix.SockaddrInet4{Port: port}
		switch {
		case family == unix.AF_INET6:
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
				return err
			}
			sa = &unix.SockaddrInet6{Port: port}
		case layout == "reuseport":
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
				return err
			}
			sa = &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}
		}
		if err := unix.Bind(fd, sa); err != nil {
			return err
		}
		backlog := 8
		if i == 0 {
			backlog = envInt(helperBacklogEnv)
		}
		if err := unix.Listen(fd, backlog); err != nil {
			return err
		}
		if port == 0 {
			if port, err = localPort(fd); err != nil {
				return err
			}
		}
		fds = append(fds, fd)
	}
	if layout == "reuseport" {
		if err := reuseportByCPU(fds[0]); err != nil {
			return err
		}
	}
	var st [2]unix.Stat_t
	for i, fd := range fds {
		if err := unix.Fstat(fd, &st[i]); err != nil {
			return err
		}
	}
	fmt.Printf("READY pid=%d lport=0 port=%d ino=%d ino2=%d\n", os.Getpid(), port, st[0].Ino, st[1].Ino)
	bufio.NewReader(os.Stdin).ReadString('\n')
	fmt.Printf("RESULT done=1\n")
	return nil
}

// reuseportByCPU makes the kernel pick the group's member by the CPU that
// handles the SYN (index = CPU, the group's members in listen() order): a
// classic BPF program returning SKF_AD_CPU, which every kernel since 4.5
// runs for TCP groups. Left to the kernel's hash of the 4-tuple, 20 clients
// now and then all but 2 land on one member and the other drops nothing.
func reuseportByCPU(fd int) error {
	var skfAdCPU int32 = -0x1000 + 36 // linux/filter.h: SKF_AD_OFF + SKF_AD_CPU
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: uint32(skfAdCPU)},
		{Code: unix.BPF_RET | unix.BPF_A},
	}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
		&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
}

// connectClients opens the connections without waiting for each (from one
// CPU with helperPinEnv: on loopback a SYN is handled on the sender's), reports
// which completed their handshake ("CONNECTED ports=... established=N"),
// then on "SEND" writes a request on each connected one, waits the given
// time and reports what each socket saw: still ESTABLISHED with its request
// unacknowledged, or reset.
func connectClients(d time.Duration) error {
	n, port := envInt(helperCountEnv), envInt(helperPortEnv)
	var fds, ports []int
	for i := 0; i < n; i++ {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			return err
		}
		err = unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port})
		if err != nil && !errors.Is(err, unix.EINPROGRESS) {
			return err
		}
		p, _ := localPort(fd)
		fds, ports = append(fds, fd), append(ports, p)
	}
	time.Sleep(500 * time.Millisecond) // loopback handshakes take microseconds
	established := 0
	for _, fd := range fds {
		if tcpState(fd) == 1 {
			established++
		}
	}
	fmt.Printf("CONNECTED ports=%s established=%d\n", joinInts(ports), established)
	if line, _ := bufio.NewReader(os.Stdin).ReadString('\n'); strings.TrimSpace(line) != "SEND" {
		return fmt.Errorf("want SEND, got %q", line)
	}
	for _, fd := range fds {
		if tcpState(fd) == 1 {
			unix.Write(fd, []byte("GET / HTTP/1.1\r\nHost: e2e\r\n\r\n"))
		}
	}
	time.Sleep(d)
	var unacked, reset int
	buf := make([]byte, 64)
	for _, fd := range fds {
		if _, err := unix.Read(fd, buf); errors.Is(err, unix.ECONNRESET) {
			reset++
			continue
		}
		if q, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ); err == nil && q > 0 && tcpState(fd) == 1 {
			unacked++
		}
	}
	fmt.Printf("RESULT established_unacked=%d reset=%d\n", unacked, reset)
	return nil
}

func tcpState(fd int) uint8 {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0
	}
	return info.State
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// startServer starts a listener with this backlog in ns.
func startServer(t testing.TB, ns *netns, backlog int) *helperProc {
	t.Helper()
	return startHelper(t, ns, "server", 0, helperBacklogEnv+"="+strconv.Itoa(backlog))
}

// startServers starts a "listeners" helper with this layout in ns; the
// first listener has this backlog. It returns the helper and both inodes.
func startServers(t testing.TB, ns *netns, layout string, backlog int) (*helperProc, uint64, uint64) {
	t.Helper()
	h := startHelperNoReady(t, ns, "listeners", 0, helperBacklogEnv+"="+strconv.Itoa(backlog), helperLayoutEnv+"="+layout)
	kv := h.line("READY")
	h.PID, _ = strconv.Atoi(kv["pid"])
	h.Port, _ = strconv.Atoi(kv["port"])
	ino, _ := strconv.ParseUint(kv["ino"], 10, 64)
	ino2, _ := strconv.ParseUint(kv["ino2"], 10, 64)
	return h, ino, ino2
}

// clientsProc is a running "clients" helper.
type clientsProc struct {
	*helperProc
	ports       map[int]bool
	established int
}

func startClients(t testing.TB, ns *netns, port, n int, d time.Duration, env ...string) *clientsProc {
	t.Helper()
	h := startHelperNoReady(t, ns, "clients", d, append(env, helperPortEnv+"="+strconv.Itoa(port), helperCountEnv+"="+strconv.Itoa(n))...)
	kv := h.line("CONNECTED")
	c := &clientsProc{helperProc: h, ports: map[int]bool{}}
	for _, p := range strings.Split(kv["ports"], ",") {
		n, _ := strconv.Atoi(p)
		c.ports[n] = true
	}
	c.established, _ = strconv.Atoi(kv["established"])
	return c
}

// send tells the clients to send their requests and waits for their report.
func (c *clientsProc) send() map[string]string {
	c.t.Helper()
	fmt.Fprintln(c.stdin, "SEND")
	c.result = c.line("RESULT")
	c.cmd.Wait()
	return c.result
}

// netstat reads the namespace's TcpExt counters.
func (n *netns) netstat() map[string]uint64 {
	n.t.Helper()
	out := n.run("cat", "/proc/net/netstat")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	m := map[string]uint64{}
	for i := 0; i+1 < len(lines); i += 2 {
		keys, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(keys) != len(vals) || keys[0] != "TcpExt:" {
			continue
		}
		for j := 1; j < len(keys); j++ {
			v, _ := strconv.ParseUint(vals[j], 10, 64)
			m[keys[j]] = v
		}
	}
	return m
}

func (n *netns) sysctl(name, value string) {
	n.t.Helper()
	n.run("sysctl", "-qw", name+"="+value)
}

// checkListenCounters: what tcptrace counted against the namespace's own
// counters. ListenOverflows counts SYNs dropped for a full accept queue and
// third-ACK overflows; ListenDrops counts every drop of either kind.
// tcptrace's summary makes the same checks but ListenDrops': they must be
// there and read what the test read, or more (the tracer's run spans the
// test's readings). A count may fall short by the program runs the tracer
// says were skipped, and on this host (not in the VM matrix) by what its
// summary names as not seen: now and then a CPU of this machine runs no
// tracing program for a few milliseconds (docs/probes.md, "Counts against
// the kernel's"), enough to miss a burst of SYNs that the clients'
// retransmission timers send together; at most half, and never unnamed.
func checkListenCounters(t *testing.T, tr *tracerRun, ns *netns, pid int, delta map[string]uint64) {
	t.Helper()
	drops := countBy(tr.eventsFor("syn_drop", pid))
	overflows := sumCounts(tr.eventsFor("listen_overflow", pid))
	var allDrops uint64
	for _, n := range drops {
		allDrops += n
	}
	skipped := tr.skippedRuns()
	agrees := func(counter string, got uint64, events ...string) bool {
		return kernelAgrees(t, tr, ns, counter, got, delta[counter], skipped, events...)
	}
	// Each drop ListenOverflows counts, ListenDrops counts too: a shortfall
	// the ListenOverflows check accepted (skipped runs, or a miss the
	// summary named) is ListenDrops' as well, and is not asked of it twice.
	var overflowMiss uint64
	if got := drops["accept_queue_full"] + overflows; !agrees("ListenOverflows", got, "syn_drop", "listen_overflow") {
		t.Errorf("ListenOverflows moved by %d; tcptrace: %d syn_drop[accept_queue_full] + %d listen_overflow = %d",
			delta["ListenOverflows"], drops["accept_queue_full"], overflows, got)
	} else if got < delta["ListenOverflows"] {
		overflowMiss = delta["ListenOverflows"] - got
	}
	if got := allDrops + overflows; !countAgrees(t, "ListenDrops", got+overflowMiss, delta["ListenDrops"], skipped) {
		t.Errorf("ListenDrops moved by %d; tcptrace: %d syn_drop + %d listen_overflow = %d (%v)",
			delta["ListenDrops"], allDrops, overflows, got, drops)
	}
	if got := drops["syn_queue_full"]; !agrees("TCPReqQFullDrop", got, "syn_drop") {
		t.Errorf("TCPReqQFullDrop moved by %d; tcptrace: %d syn_drop[syn_queue_full]", delta["TCPReqQFullDrop"], got)
	}
	if got := sumCounts(tr.eventsFor("syn_cookie", pid)); !agrees("TCPReqQFullDoCookies", got, "syn_cookie") {
		t.Errorf("TCPReqQFullDoCookies moved by %d; tcptrace: %d syn_cookie", delta["TCPReqQFullDoCookies"], got)
	}
	if t.Failed() {
		// What a rare miss needs to be understood: every line of the run
		// (any pid) and tcptrace's summary.
		t.Logf("all events:\n%s\nstderr:\n%s", dump(tr.eventsFor("", 0)), tr.stderrText())
	}
}

var listenCounters = []string{"ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "TCPReqQFullDoCookies", "TCPSynRetrans"}

// kernelAgrees: tcptrace's count got of what the kernel's counter counted
// (want, read by the test) agrees with it, as checkListenCounters says; the
// summary's own check of the counter (over the events named) must be there.
func kernelAgrees(t *testing.T, tr *tracerRun, ns *netns, counter string, got, want, skipped uint64, events ...string) bool {
	t.Helper()
	kernel, notSeen, ok := tr.counterCheck(counter, ns.inode())
	switch {
	case !ok && want > 0 && unsupported(events...) == "" && ns.made.Before(tr.started):
		// (A namespace made after the tracer started has no reading at
		// the start: no check.)
		t.Errorf("the summary does not compare %s in netns %d", counter, ns.inode())
	case ok && kernel < want:
		t.Errorf("the summary says %s went up by %d in netns %d, the test read %d in a shorter time", counter, kernel, ns.inode(), want)
	}
	if countAgrees(t, counter, got, want, skipped) {
		return true
	}
	if inMatrix() || got > want || got+notSeen < want || 2*(want-got) > want {
		return false
	}
	t.Logf("%s: tcptrace %d of %d, the %d missing named in its summary as not seen (%d)", counter, got, want, want-got, notSeen)
	return true
}

// floodClients overflows the accept queue of a server that never accepts:
// backlog+1 clients fill it first (the queue is full past its backlog),
// then n more connect, and every SYN of theirs is dropped, retransmitted
// and dropped again for d. Filling first keeps the drops at the SYN: 20
// clients at once under emulation can all reach the SYN stage before any
// handshake completes, and then overflow at the final ACK instead. Both
// helpers end with flood.send() and fill.send().
func floodClients(t testing.TB, ns *netns, port, backlog, n int, d time.Duration) (flood, fill *clientsProc) {
	t.Helper()
	fill = startClients(t, ns, port, backlog+1, 0)
	if fill.established != backlog+1 {
		t.Fatalf("%d of %d clients filling the accept queue connected", fill.established, backlog+1)
	}
	return startClients(t, ns, port, n, d), fill
}
