package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The helper programs are this test binary started again with helperEnv set
// to a mode, inside a test's namespace. Raw syscalls, not package net: Go's
// runtime hides EAGAIN from the application, and EAGAIN is what is tested.
const (
	helperEnv        = "TCPTRACE_E2E_HELPER"
	helperSecondsEnv = "TCPTRACE_E2E_SECONDS"
	// helperPinEnv: the whole helper process on this CPU. Two helpers
	// pinned to one CPU exchange segments in the order they sent them: a
	// veth hands a packet to the backlog of the CPU that sent it, so
	// senders on two CPUs can overtake each other.
	helperPinEnv = "TCPTRACE_E2E_PIN_CPU"
	// helperCgroupEnv: the helper waits until the test has moved it into
	// this cgroup (a v2 path) before it does anything else, as a
	// container's process starts in the container's cgroup. (ip netns exec
	// mounts a sysfs of its own, without the cgroup hierarchy: the helper
	// cannot move itself.)
	helperCgroupEnv = "TCPTRACE_E2E_CGROUP"
)

// runHelper sets up one connection on loopback, prints
// "READY pid=P lport=L port=S", waits for "GO" on stdin, makes the
// pathology happen for the given seconds and prints "RESULT key=value ...".
func runHelper(mode string) int {
	if want := os.Getenv(helperCgroupEnv); want != "" {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			b, _ := os.ReadFile("/proc/self/cgroup")
			if strings.Contains("\n"+string(b), "\n0::"+want+"\n") {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "helper %s: not moved into cgroup %s (%q)\n", mode, want, b)
				return 1
			}
		}
	}
	if cpu := os.Getenv(helperPinEnv); cpu != "" {
		if err := pinProcess(envInt(helperPinEnv)); err != nil {
			fmt.Fprintf(os.Stderr, "helper %s: pinning to CPU %s: %v\n", mode, cpu, err)
			return 1
		}
	}
	secs, _ := strconv.ParseFloat(os.Getenv(helperSecondsEnv), 64)
	if err := helper(mode, time.Duration(secs*float64(time.Second))); err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", mode, err)
		return 1
	}
	return 0
}

// pinProcess puts every thread of the process on cpu; threads made later
// inherit their maker's mask. Until a pass finds no thread it had not
// pinned: the runtime may start one meanwhile.
func pinProcess(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	pinned := map[int]bool{}
	for {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		more := false
		for _, task := range tasks {
			tid, _ := strconv.Atoi(task.Name())
			if pinned[tid] {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
				return err
			}
			pinned[tid], more = true, true
		}
		if !more {
			return nil
		}
	}
}

func helper(mode string, d time.Duration) error {
	if h, ok := connHelpers[mode]; ok {
		return h(d)
	}
	switch mode {
	case "server":
		return listenServer()
	case "listeners":
		return listenServers()
	case "churn":
		return churn(d)
	case "clients":
		return connectClients(d)
	case "kvserver":
		return kvServer()
	case "kvclient":
		return kvClient()
	}
	rcvbuf := 0
	if mode == "zerowin" || mode == "spin" || mode == "blocked" {
		rcvbuf = 4096 // the receiver's window closes after a few KB
	}
	client, server, err := connectPair(rcvbuf)
	if err != nil {
		return err
	}
	lport, _ := localPort(client)
	sport, _ := localPort(server)
	if err := readyThenGo(lport, sport); err != nil {
		return err
	}
	switch mode {
	case "cut":
		if err := unix.SetsockoptInt(client, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			return err
		}
		go drain(server, 0)
		return nonblockingSend(client, 100, d, 2*time.Millisecond)
	case "zerowin":
		return nonblockingSend(client, 16384, d, 2*time.Millisecond)
	case "spin":
		return nonblockingSend(client, 16384, d, 0)
	case "blocked":
		go drain(server, d)
		return blockingSend(client, 4<<20)
	case "bulk":
		go drain(server, 0)
		return bulkSend(client, d)
	case "pingpong":
		return pingPong(client, server, d)
	case "ticker":
		return ticker(client, server, d)
	}
	return fmt.Errorf("unknown helper mode %q", mode)
}

// nonblockingSend writes chunks until d has passed, sleeping pause after an
// EAGAIN (0: spin), and reports how many EAGAINs the application saw.
func nonblockingSend(fd, chunk int, d, pause time.Duration) error {
	if err := unix.SetNonblock(fd, true); err != nil {
		return err
	}
	buf := make([]byte, chunk)
	var eagains, sent uint64
	end := time.Now().Add(d)
	for i := 0; ; i++ {
		if i%64 == 0 && time.Now().After(end) {
			break
		}
		n, err := unix.Write(fd, buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			eagains++
			if pause > 0 {
				time.Sleep(pause)
			}
		case err != nil:
			return err
		default:
			sent += uint64(n)
		}
	}
	fmt.Printf("RESULT eagains=%d sent=%d\n", eagains, sent)
	return nil
}

// blockingSend writes total bytes on a blocking socket and reports how long
// the writes took.
func blockingSend(fd, total int) error {
	buf := make([]byte, 65536)
	start := time.Now()
	for sent := 0; sent < total; {
		n, err := unix.Write(fd, buf)
		if err != nil {
			return err
		}
		sent += n
	}
	fmt.Printf("RESULT blocked_ms=%d\n", time.Since(start).Milliseconds())
	return nil
}

// bulkSend writes 128 KB at a time on a blocking socket for d, to a reader
// that keeps up: the bulk sender's load (few sends, many segments and ACKs).
func bulkSend(fd int, d time.Duration) error {
	buf := make([]byte, 128<<10)
	var sent uint64
	for end := time.Now().Add(d); time.Now().Before(end); {
		n, err := unix.Write(fd, buf)
		if err != nil {
			return err
		}
		sent += uint64(n)
	}
	fmt.Printf("RESULT sent_mb=%d gbps=%.1f\n", sent>>20, float64(sent)*8/d.Seconds()/1e9)
	return nil
}

// pingPong sends 64-byte requests and echoes them back until d has passed:
// the small-message request/response load that runs the send hooks the
// most per byte. It reports the round trips made.
func pingPong(client, server int, d time.Duration) error {
	for _, fd := range []int{client, server} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			return err
		}
	}
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := unix.Read(server, buf)
			if n <= 0 || err != nil {
				return
			}
			unix.Write(server, buf[:n])
		}
	}()
	buf := make([]byte, 64)
	var trips uint64
	for end := time.Now().Add(d); time.Now().Before(end); trips++ {
		if _, err := unix.Write(client, buf); err != nil {
			return err
		}
		if _, err := io.ReadFull(fdReader(client), buf); err != nil {
			return err
		}
	}
	fmt.Printf("RESULT trips=%d\n", trips)
	return nil
}

// churn opens and closes connections to a listener that accepts them,
// until d has passed: SYNs, state changes and freed skbs at full rate.
func churn(d time.Duration) error {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	lo := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	unix.SetsockoptInt(ln, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(ln, lo); err != nil {
		return err
	}
	if err := unix.Listen(ln, 1024); err != nil {
		return err
	}
	port, _ := localPort(ln)
	if err := readyAndWait(port); err != nil {
		return err
	}
	go func() {
		for {
			fd, _, err := unix.Accept(ln)
			if err != nil {
				return
			}
			unix.Close(fd)
		}
	}()
	var conns uint64
	for end := time.Now().Add(d); time.Now().Before(end); conns++ {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		// SO_LINGER 0: close with a reset, so no TIME_WAIT exhausts the ports.
		unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: lo.Addr, Port: port}); err != nil {
			unix.Close(fd)
			continue
		}
		unix.Close(fd)
	}
	fmt.Printf("RESULT conns=%d\n", conns)
	return nil
}

type fdReader int

func (f fdReader) Read(p []byte) (int, error) {
	n, err := unix.Read(int(f), p)
	if n == 0 && err == nil {
		return 0, io.EOF
	}
	return n, err
}

// drain reads everything from fd after waiting `after`.
func drain(fd int, after time.Duration) {
	time.Sleep(after)
	buf := make([]byte, 1<<16)
	for {
		if n, err := unix.Read(fd, buf); n <= 0 || err != nil {
			return
		}
	}
}

// connectPair returns both ends of a loopback TCP connection. rcvbuf, if
// set, is the receiver's SO_RCVBUF, set on the listener before the
// handshake so that the window scale matches it.
func connectPair(rcvbuf int) (client, server int, err error) {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return 0, 0, err
	}
	if rcvbuf > 0 {
		if err := unix.SetsockoptInt(ln, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf); err != nil {
			return 0, 0, err
		}
	}
	lo := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	if err := unix.Bind(ln, lo); err != nil {
		return 0, 0, err
	}
	if err := unix.Listen(ln, 8); err != nil {
		return 0, 0, err
	}
	port, err := localPort(ln)
	if err != nil {
		return 0, 0, err
	}
	client, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return 0, 0, err
	}
	if err := unix.Connect(client, &unix.SockaddrInet4{Addr: lo.Addr, Port: port}); err != nil {
		return 0, 0, err
	}
	server, _, err = unix.Accept(ln)
	return client, server, err
}

func localPort(fd int) (int, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, err
	}
	if sa6, ok := sa.(*unix.SockaddrInet6); ok {
		return sa6.Port, nil
	}
	return sa.(*unix.SockaddrInet4).Port, nil
}

// helperProc is a running helper.
type helperProc struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Scanner
	PID    int
	LPort  int // the sending (client) socket's port
	Port   int // the receiving (server) socket's port
	result map[string]string
}

// startHelper starts a helper in ns and waits for its READY line. env adds
// NAME=value settings for the helper.
func startHelper(t testing.TB, ns *netns, mode string, d time.Duration, env ...string) *helperProc {
	t.Helper()
	h := startHelperNoReady(t, ns, mode, d, env...)
	kv := h.line("READY")
	h.PID, _ = strconv.Atoi(kv["pid"])
	h.LPort, _ = strconv.Atoi(kv["lport"])
	h.Port, _ = strconv.Atoi(kv["port"])
	return h
}

func startHelperNoReady(t testing.TB, ns *netns, mode string, d time.Duration, env ...string) *helperProc {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns.name, self)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, fmt.Sprintf("%s=%f", helperSecondsEnv, d.Seconds()))
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return &helperProc{t: t, cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout), PID: cmd.Process.Pid}
}

// line reads the helper's next line, which must start with prefix, as
// key=value pairs.
func (h *helperProc) line(prefix string) map[string]string {
	h.t.Helper()
	if !h.out.Scan() {
		h.t.Fatalf("helper ended before %s", prefix)
	}
	kv, ok := keyValues(h.out.Text(), prefix)
	if !ok {
		h.t.Fatalf("helper said %q, want %s", h.out.Text(), prefix)
	}
	return kv
}

// keyValues reads a helper's line "PREFIX k=v ...": its pairs, and whether
// it starts with prefix.
func keyValues(line, prefix string) (map[string]string, bool) {
	f := strings.Fields(line)
	if len(f) == 0 || f[0] != prefix {
		return nil, false
	}
	kv := map[string]string{}
	for _, p := range f[1:] {
		k, v, _ := strings.Cut(p, "=")
		kv[k] = v
	}
	return kv, true
}

// run sends GO and waits for the RESULT line and the helper's exit.
func (h *helperProc) run() map[string]string {
	h.t.Helper()
	fmt.Fprintln(h.stdin, "GO")
	h.result = h.line("RESULT")
	if err := h.cmd.Wait(); err != nil {
		h.t.Fatalf("helper: %v", err)
	}
	return h.result
}

func (h *helperProc) resultUint(key string) uint64 {
	h.t.Helper()
	v, err := strconv.ParseUint(h.result[key], 10, 64)
	if err != nil {
		h.t.Fatalf("helper result %s=%q: %v", key, h.result[key], err)
	}
	return v
}

// listenTCP4 is a listening IPv4 socket bound to addr:port (0: any port).
func listenTCP4(addr [4]byte, port, backlog int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: addr, Port: port}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Listen(fd, backlog); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// inode of the namespace, as events report it.
func (n *netns) inode() uint32 {
	n.t.Helper()
	fi, err := os.Stat("/run/netns/" + n.name)
	if err != nil {
		n.t.Fatal(err)
	}
	return uint32(fi.Sys().(*syscall.Stat_t).Ino)
}

func inNetns(evs []event, ino uint32) []event {
	var out []event
	for _, e := range evs {
		if e.NetNS == ino {
			out = append(out, e)
		}
	}
	return out
}
