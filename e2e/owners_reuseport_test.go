package e2e

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() {
	connHelpers["rpserver"] = reusePortServer
	connHelpers["rpclient"] = reusePortClient
}

// rpConns: connections the client makes to the SO_REUSEPORT group. The
// kernel picks a member per connection by a hash of the addresses, so each
// of two servers gets some (all to one: a chance of 2^-39).
const rpConns = 40

// Connections accepted by the members of a SO_REUSEPORT group, one process
// per member (nginx, envoy, a pre-forking server): the kernel spreads them
// over the members, and each belongs to the process that accepts it. Two
// servers share a port; a client makes rpConns connections and aborts them
// all (SO_LINGER 0). The resets the servers receive (softirq, on loopback in
// the client's task) must be counted per server, each as many as it
// accepted, and --pid of one server must count its own only. Once with the
// tracer started before the servers listen (their owners recorded at
// listen()), once after (recorded by the start-up iterator). Where the
// kernel keeps no owner in the sockets (before 5.11), a connection is
// attributed through its listener's address, which cannot tell the members
// apart: the kernel must then name no owner (never a wrong one) and count
// the resets in the summary; user space may name the owner by the socket's
// inode, but only on a line of one reset, and then the right server.
func TestOwnersReusePortProcesses(t *testing.T) {
	requireEvents(t, "reset")
	for _, order := range []string{"tracer_first", "servers_first"} {
		t.Run(order, func(t *testing.T) {
			ns := newNetns(t)
			var tr *tracerRun
			if order == "tracer_first" {
				tr = startTracer(t, "-e", "reset")
			}
			first := startHelper(t, ns, "rpserver", 0)
			second := startHelper(t, ns, "rpserver", 0, fmt.Sprintf("TCPTRACE_E2E_PORT=%d", first.Port))
			servers := []*helperProc{first, second}
			if order == "servers_first" {
				tr = startTracer(t, "-e", "reset")
			}
			byPID := startTracer(t, "-e", "reset", "--pid", strconv.Itoa(second.PID))
			client := startHelper(t, ns, "rpclient", 0, fmt.Sprintf("TCPTRACE_E2E_PORT=%d", first.Port))
			fmt.Fprintln(client.stdin, "GO")
			client.line("CONNECTED")
			accepted := map[int]uint64{}
			acceptedBy := map[int]int{} // client port -> server pid
			for _, s := range servers {
				fmt.Fprintln(s.stdin, "ACCEPT")
				kv := s.line("ACCEPTED")
				n, _ := strconv.ParseUint(kv["n"], 10, 64)
				accepted[s.PID] = n
				for _, p := range strings.Split(kv["peers"], ",") {
					port, _ := strconv.Atoi(p)
					acceptedBy[port] = s.PID
				}
			}
			before := ns.snmp()
			fmt.Fprintln(client.stdin, "ABORT")
			client.line("RESULT")
			for _, s := range servers {
				fmt.Fprintln(s.stdin, "READ")
				s.line("RESULT")
			}
			delta := counterDelta(before, ns.snmp(), "EstabResets")
			stopAll(t, tr, byPID)
			if accepted[first.PID]+accepted[second.PID] != rpConns || accepted[first.PID] == 0 || accepted[second.PID] == 0 {
				t.Fatalf("the servers accepted %v of %d connections: the kernel did not spread them", accepted, rpConns)
			}

			tableOnly := tr.tableOnly()
			got := map[int]uint64{}
			for _, e := range inNetns(tr.eventsFor("reset", 0), ns.inode()) {
				if e.Reason != "received" || e.LPort != first.Port {
					continue
				}
				if known := e.Details["owner_known"] == true; known == tableOnly {
					t.Errorf("reset received with owner_known %t (owners in a table only: %t): %s", known, tableOnly, dump([]event{e}))
				}
				// Without an owner from the kernel, user space names
				// one by the socket's inode: only on a line of one
				// reset, and then the server that accepted it.
				if !tableOnly || e.PID == 0 {
					got[e.PID] += e.Count
				} else if e.Count != 1 || e.PID != acceptedBy[e.RPort] {
					t.Errorf("a line of %d resets named pid %d by its latest socket's inode (its connection from port %d was accepted by %d): %s",
						e.Count, e.PID, e.RPort, acceptedBy[e.RPort], dump([]event{e}))
				} else {
					got[0]++ // owner unknown to the kernel, counted so in the summary
				}
			}
			// Both ends leave ESTABLISHED for CLOSE: the client's abort
			// and the servers' resets.
			if delta["EstabResets"] != 2*rpConns {
				t.Errorf("EstabResets moved by %d, want %d", delta["EstabResets"], 2*rpConns)
			}
			if tableOnly {
				if got[0] != rpConns || ownersUnknown(tr.stderrText()) == 0 {
					t.Errorf("owners in a table only: want %d resets received without an owner, counted in the summary; by pid: %v; stderr:\n%s", rpConns, got, tr.stderrText())
				}
				return
			}
			if got[first.PID]+got[second.PID] != rpConns {
				t.Fatalf("resets received by the servers, by pid: %v, want %d in all (accepted %v); stderr:\n%s", got, rpConns, accepted, tr.stderrText())
			}
			for _, s := range servers {
				if got[s.PID] != accepted[s.PID] {
					t.Errorf("server %d accepted %d connections, tcptrace counted %d resets received by it (all: %v)", s.PID, accepted[s.PID], got[s.PID], got)
				}
			}
			var mine uint64
			for _, e := range inNetns(byPID.eventsFor("reset", 0), ns.inode()) {
				if e.PID != second.PID {
					t.Errorf("--pid %d printed another process's reset: %s", second.PID, dump([]event{e}))
				}
				if e.Reason == "received" {
					mine += e.Count
				}
			}
			if mine != accepted[second.PID] {
				t.Errorf("--pid %d counted %d resets received, the server accepted %d connections; stderr:\n%s", second.PID, mine, accepted[second.PID], byPID.stderrText())
			}
		})
	}
}

// reusePortServer listens on 127.0.0.1 with SO_REUSEPORT, on
// TCPTRACE_E2E_PORT or a port of its own. ACCEPT takes every connection
// queued (the client has finished connecting) and prints how many; READ
// reads each until the client's reset ends it.
func reusePortServer(time.Duration) error {
	port, _ := strconv.Atoi(os.Getenv("TCPTRACE_E2E_PORT"))
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	if err := unix.SetsockoptInt(ln, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return err
	}
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}); err != nil {
		return err
	}
	if err := unix.Listen(ln, rpConns); err != nil {
		return err
	}
	port, _ = localPort(ln)
	fmt.Printf("READY pid=%d port=%d\n", os.Getpid(), port)
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() || in.Text() != "ACCEPT" {
		return fmt.Errorf("waiting for ACCEPT: %q", in.Text())
	}
	if err := unix.SetNonblock(ln, true); err != nil {
		return err
	}
	var conns []int
	var peers []string
	for {
		fd, sa, err := unix.Accept(ln)
		if err != nil {
			break
		}
		conns = append(conns, fd)
		if sa, ok := sa.(*unix.SockaddrInet4); ok {
			peers = append(peers, strconv.Itoa(sa.Port))
		}
	}
	fmt.Printf("ACCEPTED n=%d peers=%s\n", len(conns), strings.Join(peers, ","))
	if !in.Scan() || in.Text() != "READ" {
		return fmt.Errorf("waiting for READ: %q", in.Text())
	}
	resets := 0
	buf := make([]byte, 64)
	for _, fd := range conns {
		// SO_RCVTIMEO bounds a read the reset never ends.
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
		if _, err := unix.Read(fd, buf); err == unix.ECONNRESET {
			resets++
		}
	}
	fmt.Printf("RESULT resets=%d\n", resets)
	return nil
}

// reusePortClient makes rpConns connections to TCPTRACE_E2E_PORT, then
// aborts them all (SO_LINGER 0).
func reusePortClient(time.Duration) error {
	port, _ := strconv.Atoi(os.Getenv("TCPTRACE_E2E_PORT"))
	fmt.Printf("READY pid=%d\n", os.Getpid())
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() || in.Text() != "GO" {
		return fmt.Errorf("waiting for GO: %q", in.Text())
	}
	var conns []int
	for i := 0; i < rpConns; i++ {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}); err != nil {
			return err
		}
		conns = append(conns, fd)
	}
	fmt.Println("CONNECTED")
	if !in.Scan() || in.Text() != "ABORT" {
		return fmt.Errorf("waiting for ABORT: %q", in.Text())
	}
	for _, fd := range conns {
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
			return err
		}
		unix.Close(fd)
	}
	fmt.Printf("RESULT aborted=%d\n", len(conns))
	return nil
}
