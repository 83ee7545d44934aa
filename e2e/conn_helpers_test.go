package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var connEvents = []string{"-e", "syn_retransmit,connect_timeout,connect_refused,port_exhaustion,timewait_overflow,paws_reject,reset", "--interval", "500ms"}

// snmp reads the namespace's Tcp: counters (/proc/net/snmp), which
// /proc/net/netstat's TcpExt lacks: OutRsts, EstabResets.
func (n *netns) snmp() map[string]uint64 {
	n.t.Helper()
	lines := strings.Split(strings.TrimSpace(n.run("cat", "/proc/net/snmp")), "\n")
	m := map[string]uint64{}
	for i := 0; i+1 < len(lines); i += 2 {
		keys, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(keys) != len(vals) || keys[0] != "Tcp:" {
			continue
		}
		for j := 1; j < len(keys); j++ {
			v, _ := strconv.ParseInt(vals[j], 10, 64) // MaxConn is -1
			m[keys[j]] = uint64(v)
		}
	}
	return m
}

// dropSYNsTo makes a port a black hole for connection attempts: every SYN
// to it is dropped on arrival, as by a firewall in front of a dead host.
func (n *netns) dropSYNsTo(port int) {
	n.t.Helper()
	n.nft("table ip tcptrace_e2e {\n\tchain in { type filter hook input priority 0; tcp dport " + strconv.Itoa(port) +
		" tcp flags & syn == syn drop; }\n}\n")
}

func detail(e event, key string) float64 {
	v, _ := e.Details[key].(float64)
	return v
}

func near(got, want, tol float64) bool { return math.Abs(got-want) <= tol }

func stopAll(t *testing.T, runs ...*tracerRun) {
	t.Helper()
	for _, r := range runs {
		if err := r.stop(syscall.SIGINT); err != nil {
			t.Fatalf("tcptrace: %v\n%s", err, r.stderrText())
		}
	}
}

func detailNum(s string) float64 {
	v, _ := strconv.ParseFloat(s, 64)
	return v
}

// probeHooks is what --list-probes says an event's chosen path hooks.
func probeHooks(t *testing.T, event string) string {
	t.Helper()
	args := []string{"--list-probes", "-e", event}
	if forcePath != "" {
		args = append(args, "--force-path", forcePath)
	}
	out, _ := exec.Command(tcptraceBin, args...).CombinedOutput()
	return string(out)
}

// inMatrix: the VM matrix, where a kernel may lack what a test needs.
func inMatrix() bool { return forcePath != "" || os.Getenv("TCPTRACE_E2E_KERNEL_MATRIX") != "" }

// Helper modes for the connection set-up and teardown tests. Each prints
// READY with its pid, waits for GO, makes its pathology happen and prints
// RESULT. Settings come in $TCPTRACE_E2E_PORT and $TCPTRACE_E2E_COUNT.
var connHelpers = map[string]func(time.Duration) error{
	"connect":    connectOnce,
	"connects":   concurrentConnects,
	"fullqueue":  fullQueueConnect,
	"twserver":   timeWaitServer,
	"natclients": natClients,
	"shortconns": shortConns,
	"pawssyn":    pawsSYN,
	"pawsestab":  pawsEstablished,
	"reset":      resetPair,
	"refuse":     refusedConnects,
}

var loopback = [4]byte{127, 0, 0, 1}

func readyAndWait(port int) error { return readyThenGo(0, port) }

// readyThenGo tells the test the helper's pid and ports (the READY line
// it parses), then waits for the GO that starts the pathology.
func readyThenGo(lport, port int) error {
	fmt.Printf("READY pid=%d lport=%d port=%d\n", os.Getpid(), lport, port)
	if line, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil || strings.TrimSpace(line) != "GO" {
		return fmt.Errorf("waiting for GO: %q %v", line, err)
	}
	return nil
}

func errnoOf(err error) int {
	var e unix.Errno
	if errors.As(err, &e) {
		return int(e)
	}
	return 0
}

// echoServer accepts connections on a loopback listener (on port, 0 for
// any) and closes each after its client closed (the client closes first,
// so TIME_WAIT is the client's).
func echoServer(port int) (int, int, error) {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return 0, 0, err
	}
	unix.SetsockoptInt(ln, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: loopback, Port: port}); err != nil {
		return 0, 0, err
	}
	if err := unix.Listen(ln, 128); err != nil {
		return 0, 0, err
	}
	port, err = localPort(ln)
	if err != nil {
		return 0, 0, err
	}
	go func() {
		for {
			fd, _, err := unix.Accept(ln)
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 512)
				for {
					if n, err := unix.Read(fd, buf); n <= 0 || err != nil {
						break
					}
				}
				unix.Close(fd)
			}()
		}
	}()
	return ln, port, nil
}
