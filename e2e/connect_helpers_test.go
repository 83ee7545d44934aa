package e2e

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Socket options of the "connect" helper: TCP_SYNCNT, TCP_USER_TIMEOUT (ms).
const (
	helperSyncntEnv      = "TCPTRACE_E2E_SYNCNT"
	helperUserTimeoutEnv = "TCPTRACE_E2E_USER_TIMEOUT_MS"
	helperFamilyEnv      = "TCPTRACE_E2E_FAMILY" // 6: connect to [::1]
)

// connectOnce makes one blocking connect() to 127.0.0.1:$PORT, with the
// socket options above when set, and reports
// its errno, its local port and how long it took.
func connectOnce(time.Duration) error {
	family := unix.AF_INET
	if envInt(helperFamilyEnv) == 6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	if n := envInt(helperSyncntEnv); n > 0 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_SYNCNT, n); err != nil {
			return err
		}
	}
	if ms := envInt(helperUserTimeoutEnv); ms > 0 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ms); err != nil {
			return err
		}
	}
	if err := readyAndWait(envInt(helperPortEnv)); err != nil {
		return err
	}
	var to unix.Sockaddr = &unix.SockaddrInet4{Addr: loopback, Port: envInt(helperPortEnv)}
	if family == unix.AF_INET6 {
		to = &unix.SockaddrInet6{Addr: [16]byte{15: 1}, Port: envInt(helperPortEnv)}
	}
	start := time.Now()
	err = unix.Connect(fd, to)
	elapsed := time.Since(start)
	lport := 0
	switch sa, _ := unix.Getsockname(fd); sa := sa.(type) {
	case *unix.SockaddrInet4:
		lport = sa.Port
	case *unix.SockaddrInet6:
		lport = sa.Port
	}
	fmt.Printf("RESULT errno=%d elapsed_ms=%d lport=%d\n", errnoOf(err), elapsed.Milliseconds(), lport)
	return nil
}

// concurrentConnects makes $COUNT blocking connect()s to 127.0.0.1:$PORT
// at once, each from its own thread, as a pool does towards a backend, and
// reports how many ended with ETIMEDOUT.
func concurrentConnects(time.Duration) error {
	port, count := envInt(helperPortEnv), envInt(helperCountEnv)
	fds := make([]int, count)
	for i := range fds {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		fds[i] = fd
	}
	if err := readyAndWait(port); err != nil {
		return err
	}
	errnos := make(chan int, count)
	for _, fd := range fds {
		go func() {
			errnos <- errnoOf(unix.Connect(fd, &unix.SockaddrInet4{Addr: loopback, Port: port}))
		}()
	}
	timeouts := 0
	for range fds {
		if <-errnos == int(unix.ETIMEDOUT) {
			timeouts++
		}
	}
	fmt.Printf("RESULT connects=%d timeouts=%d\n", count, timeouts)
	return nil
}

// fullQueueConnect listens with a backlog of 0 and never accepts: one
// connection fills the accept queue, and the next client's SYNs are all
// dropped by the listener (accept_queue_full). That client connects with
// TCP_USER_TIMEOUT of $TCPTRACE_E2E_USER_TIMEOUT_MS and reports its errno
// and local port.
func fullQueueConnect(time.Duration) error {
	ln, err := listenTCP4(loopback, 0, 0)
	if err != nil {
		return err
	}
	port, _ := localPort(ln)
	first, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	if err := unix.Connect(first, &unix.SockaddrInet4{Addr: loopback, Port: port}); err != nil {
		return err
	}
	cl, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	if err := unix.SetsockoptInt(cl, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, envInt(helperUserTimeoutEnv)); err != nil {
		return err
	}
	if err := unix.Bind(cl, &unix.SockaddrInet4{Addr: loopback}); err != nil {
		return err
	}
	cport, _ := localPort(cl)
	if err := readyThenGo(cport, port); err != nil {
		return err
	}
	err = unix.Connect(cl, &unix.SockaddrInet4{Addr: loopback, Port: port})
	fmt.Printf("RESULT errno=%d\n", errnoOf(err))
	return nil
}

// Addresses of the NAT test: the server's namespace has natServer; the
// clients' has natClient and natOutside, the address NAT rewrites their
// connections to the server to, with the port natPort.
var (
	natServer  = [4]byte{10, 77, 0, 1}
	natClient  = [4]byte{10, 77, 0, 2}
	natOutside = [4]byte{10, 77, 0, 3}
)

const natPort = 40000

// timeWaitServer listens on natServer:$PORT, reads the first client's two
// writes and closes first, so the TIME_WAIT is the server's; then waits
// (SO_RCVTIMEO, 12 s) for a second connection and reports from where it came.
func timeWaitServer(time.Duration) error {
	ln, err := listenTCP4(natServer, envInt(helperPortEnv), 8)
	if err != nil {
		return err
	}
	port, _ := localPort(ln)
	if err := readyAndWait(port); err != nil {
		return err
	}
	fd, _, err := unix.Accept(ln)
	if err != nil {
		return err
	}
	buf := make([]byte, 16)
	for got := 0; got < 2; {
		n, err := unix.Read(fd, buf)
		if n <= 0 || err != nil {
			return fmt.Errorf("reading the first client: %d %v", n, err)
		}
		got += n
	}
	unix.Close(fd)
	unix.SetsockoptTimeval(ln, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 12})
	second := "none"
	if fd, sa, err := unix.Accept(ln); err == nil {
		if sa, ok := sa.(*unix.SockaddrInet4); ok {
			second = fmt.Sprintf("%d.%d.%d.%d:%d", sa.Addr[0], sa.Addr[1], sa.Addr[2], sa.Addr[3], sa.Port)
		}
		unix.Close(fd)
	}
	fmt.Printf("RESULT second=%s\n", second)
	return nil
}

// natClients: two clients behind the NAT, from ports 5001 and 5002, both
// rewritten to natOutside:natPort. The first connects, moves its timestamp
// clock 1000 s ahead (TCP_REPAIR, TCP_TIMESTAMP) and writes, so the server
// keeps that timestamp in its TIME_WAIT socket once it has closed first.
// When the NAT's conntrack entry for it has expired, the second connects:
// same 4-tuple after NAT, a clock 1000 s behind (tcp_timestamps=2, no random
// offset): PAWS rejects its SYN. It reports the second's errno.
func natClients(time.Duration) error {
	port := envInt(helperPortEnv)
	dial := func(lport int) (int, error) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			return -1, err
		}
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: natClient, Port: lport}); err != nil {
			return -1, err
		}
		return fd, unix.Connect(fd, &unix.SockaddrInet4{Addr: natServer, Port: port})
	}
	if err := readyAndWait(port); err != nil {
		return err
	}
	c1, err := dial(5001)
	if err != nil {
		return fmt.Errorf("first client: %w", err)
	}
	unix.Write(c1, []byte("a"))
	time.Sleep(100 * time.Millisecond)
	ts, err := unix.GetsockoptInt(c1, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP)
	if err != nil {
		return err
	}
	if err := unix.SetsockoptInt(c1, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1); err != nil {
		return fmt.Errorf("TCP_REPAIR: %w", err)
	}
	if err := unix.SetsockoptInt(c1, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP, int(uint32(ts)+1000000)); err != nil {
		return fmt.Errorf("TCP_TIMESTAMP: %w", err)
	}
	if err := unix.SetsockoptInt(c1, unix.IPPROTO_TCP, unix.TCP_REPAIR, 0); err != nil {
		return err
	}
	unix.Write(c1, []byte("b"))
	buf := make([]byte, 16)
	unix.Read(c1, buf) // the server's FIN
	unix.Close(c1)
	// The NAT's conntrack entry lives nf_conntrack_tcp_timeout_time_wait
	// (1 s in the test); while it does, NAT would give the second client
	// another port.
	time.Sleep(2 * time.Second)
	start := time.Now()
	c2, err := dial(5002)
	elapsed := time.Since(start)
	if err == nil {
		// Wait for the server to close first. Closing here at once would
		// race the handshake's last ACK: sent from softirq on one CPU, it
		// can reach the server after this FIN sent from another, and be
		// rejected by PAWS in the new connection's TIME_WAIT (a second,
		// legitimate paws_reject the test does not expect).
		unix.SetsockoptTimeval(c2, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
		unix.Read(c2, buf)
	}
	unix.Close(c2)
	fmt.Printf("RESULT errno=%d elapsed_ms=%d first_ts=%d\n", errnoOf(err), elapsed.Milliseconds(), uint32(ts)+1000000)
	return nil
}
