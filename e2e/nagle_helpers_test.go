package e2e

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Helper modes for the delayed-ACK and Nagle tests: a keep-alive
// request/response server and its client, in two processes so that each
// end has its own pid.
//
// "kvserver" listens on 127.0.0.1, prints READY with its port, accepts one
// connection and answers every 32-byte request with a 64-byte header and a
// 200-byte body: two write() calls, Nagle on (an HTTP server's
// habit), unless $TCPTRACE_E2E_NODELAY=1 (TCP_NODELAY) or
// $TCPTRACE_E2E_ONEWRITE=1 (header and body in one write).
//
// "kvclient" connects to $TCPTRACE_E2E_PORT, prints READY, and on GO sends
// $TCPTRACE_E2E_COUNT requests one after the other on that connection, each
// when the previous response is complete, and prints the latencies.
const (
	helperNodelayEnv  = "TCPTRACE_E2E_NODELAY"
	helperOneWriteEnv = "TCPTRACE_E2E_ONEWRITE"
	helperQuickackEnv = "TCPTRACE_E2E_QUICKACK"
	helperIPv6Env     = "TCPTRACE_E2E_IPV6" // ::1 instead of 127.0.0.1

	kvRequest = 32
	kvHeader  = 64
	kvBody    = 200
)

// kvAddr is the loopback address of the family the test asked for.
func kvAddr(port int) (int, unix.Sockaddr) {
	if os.Getenv(helperIPv6Env) == "1" {
		return unix.AF_INET6, &unix.SockaddrInet6{Addr: [16]byte{15: 1}, Port: port}
	}
	return unix.AF_INET, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}
}

func kvServer() error {
	family, addr := kvAddr(0)
	lfd, err := unix.Socket(family, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	if err := unix.Bind(lfd, addr); err != nil {
		return err
	}
	if err := unix.Listen(lfd, 8); err != nil {
		return err
	}
	port, err := localPort(lfd)
	if err != nil {
		return err
	}
	fmt.Printf("READY pid=%d lport=0 port=%d\n", os.Getpid(), port)
	fd, _, err := unix.Accept(lfd)
	if err != nil {
		return err
	}
	if os.Getenv(helperNodelayEnv) == "1" {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			return err
		}
	}
	oneWrite := os.Getenv(helperOneWriteEnv) == "1"
	req := make([]byte, kvRequest)
	resp := make([]byte, kvHeader+kvBody)
	n := 0
	for {
		if err := readFull(fd, req); err != nil {
			break // the client closed
		}
		if oneWrite {
			err = writeFull(fd, resp)
		} else if err = writeFull(fd, resp[:kvHeader]); err == nil {
			err = writeFull(fd, resp[kvHeader:])
		}
		if err != nil {
			return err
		}
		n++
	}
	fmt.Printf("RESULT requests=%d\n", n)
	return nil
}

func kvClient() error {
	port, count := envInt(helperPortEnv), envInt(helperCountEnv)
	family, addr := kvAddr(port)
	fd, err := unix.Socket(family, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	if err := unix.Connect(fd, addr); err != nil {
		return err
	}
	lport, _ := localPort(fd)
	if err := readyThenGo(lport, port); err != nil {
		return err
	}
	req := make([]byte, kvRequest)
	resp := make([]byte, kvHeader+kvBody)
	quickack := os.Getenv(helperQuickackEnv) == "1"
	var lat []time.Duration
	for i := 0; i < count; i++ {
		start := time.Now()
		if err := writeFull(fd, req); err != nil {
			return err
		}
		if quickack {
			// Not sticky: sending the request re-entered pingpong mode.
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1); err != nil {
				return err
			}
		}
		if err := readFull(fd, resp); err != nil {
			return err
		}
		lat = append(lat, time.Since(start))
	}
	unix.Close(fd)
	sorted := append([]time.Duration(nil), lat...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	slow := 0
	for _, l := range lat {
		if l >= 30*time.Millisecond {
			slow++
		}
	}
	fmt.Printf("RESULT requests=%d median_us=%d max_us=%d slow=%d\n", len(lat),
		sorted[len(sorted)/2].Microseconds(), sorted[len(sorted)-1].Microseconds(), slow)
	return nil
}

func readFull(fd int, b []byte) error {
	for off := 0; off < len(b); {
		n, err := unix.Read(fd, b[off:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("connection closed")
		}
		off += n
	}
	return nil
}

func writeFull(fd int, b []byte) error {
	for off := 0; off < len(b); {
		n, err := unix.Write(fd, b[off:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		off += n
	}
	return nil
}

// kvRun is one server and its client in ns, ready to go.
type kvRun struct {
	server, client *helperProc
}

// startKV starts both; env (the NODELAY, ONEWRITE and QUICKACK settings)
// goes to both, each acting on its own.
func startKV(t testing.TB, ns *netns, requests int, env ...string) *kvRun {
	t.Helper()
	srv := startHelper(t, ns, "kvserver", 0, env...)
	cl := startHelper(t, ns, "kvclient", 0, append(env, helperPortEnv+"="+strconv.Itoa(srv.Port), helperCountEnv+"="+strconv.Itoa(requests))...)
	return &kvRun{server: srv, client: cl}
}

// run lets the client make its requests and returns its RESULT.
func (k *kvRun) run() map[string]string {
	k.client.t.Helper()
	res := k.client.run()
	k.server.line("RESULT")
	return res
}

// ticker sends 100 bytes every 70 ms (the delayed ACK fires after 40),
// one way, until d has passed: the
// receiver never answers, so it is never in pingpong mode; it ACKs the
// first segments at once (its quick-ACK budget) and delays the rest. It
// does not read them either: a read that empties the receive queue of a
// non-interactive connection ACKs a small segment at once
// (tcp_cleanup_rbuf()).
func ticker(client, server int, d time.Duration) error {
	go drain(server, d+time.Second)
	buf := make([]byte, 100)
	n := 0
	for end := time.Now().Add(d); time.Now().Before(end); n++ {
		if err := writeFull(client, buf); err != nil {
			return err
		}
		time.Sleep(70 * time.Millisecond)
	}
	fmt.Printf("RESULT messages=%d\n", n)
	return nil
}
