package e2e

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

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

// Socket options of the "connect" helper: TCP_SYNCNT, TCP_USER_TIMEOUT (ms).
const (
	helperSyncntEnv      = "TCPTRACE_E2E_SYNCNT"
	helperUserTimeoutEnv = "TCPTRACE_E2E_USER_TIMEOUT_MS"
	helperFamilyEnv      = "TCPTRACE_E2E_FAMILY" // 6: connect to [::1]
)

func readyAndWait(port int) error {
	fmt.Printf("READY pid=%d lport=0 port=%d\n", os.Getpid(), port)
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
	fmt.Printf("READY pid=%d lport=%d port=%d\n", os.Getpid(), cport, port)
	if line, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil || strings.TrimSpace(line) != "GO" {
		return fmt.Errorf("waiting for GO: %q %v", line, err)
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
	unix.Close(c2)
	fmt.Printf("RESULT errno=%d elapsed_ms=%d first_ts=%d\n", errnoOf(err), elapsed.Milliseconds(), uint32(ts)+1000000)
	return nil
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

// shortConns makes $COUNT short connections to its own server, one after
// the other, each closed by the client first (a request/response client
// without keep-alive): every closed one leaves a TIME_WAIT socket, or
// overflows tcp_max_tw_buckets. It reports how many connect()s failed with
// EADDRNOTAVAIL. The server listens on $PORT if set (outside a small
// ip_local_port_range, so that it does not take one of the client's ports).
func shortConns(time.Duration) error {
	_, port, err := echoServer(envInt(helperPortEnv))
	if err != nil {
		return err
	}
	if err := readyAndWait(port); err != nil {
		return err
	}
	var ok, eaddr, other int
	for i := 0; i < envInt(helperCountEnv); i++ {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		err = unix.Connect(fd, &unix.SockaddrInet4{Addr: loopback, Port: port})
		switch {
		case err == nil:
			ok++
			unix.Write(fd, []byte("GET / HTTP/1.0\r\n\r\n"))
			unix.Close(fd)
			// Let the server's FIN arrive: the client's TIME_WAIT
			// (or its overflow) happens then.
			time.Sleep(20 * time.Millisecond)
		case errors.Is(err, unix.EADDRNOTAVAIL):
			eaddr++
			unix.Close(fd)
		default:
			other++
			unix.Close(fd)
		}
	}
	time.Sleep(100 * time.Millisecond)
	fmt.Printf("RESULT connected=%d eaddrnotavail=%d other=%d\n", ok, eaddr, other)
	return nil
}

// pawsSYN leaves a connection's 4-tuple in TIME_WAIT on the server (the
// server closes first), then sends $COUNT SYNs for the same 4-tuple from a
// raw socket with a timestamp older than the last one the server saw: what
// a second client behind the same NAT address, with its own timestamp
// clock, sends when it reuses the source port.
func pawsSYN(time.Duration) error {
	ln, err := listenTCP4(loopback, 0, 8)
	if err != nil {
		return err
	}
	port, _ := localPort(ln)
	if err := readyAndWait(port); err != nil {
		return err
	}
	cl, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	if err := unix.Connect(cl, &unix.SockaddrInet4{Addr: loopback, Port: port}); err != nil {
		return err
	}
	cport, _ := localPort(cl)
	srv, _, err := unix.Accept(ln)
	if err != nil {
		return err
	}
	unix.Write(cl, []byte("hello"))
	buf := make([]byte, 16)
	unix.Read(srv, buf)
	// The client's timestamp clock as the server last saw it (TCP_TIMESTAMP
	// is the clock plus the connection's random offset).
	ts, err := unix.GetsockoptInt(cl, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP)
	if err != nil {
		return err
	}
	unix.Close(srv) // the server closes first: TIME_WAIT is the server's
	time.Sleep(50 * time.Millisecond)
	unix.Close(cl)
	time.Sleep(100 * time.Millisecond)

	raw, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		return err
	}
	old := uint32(ts) - 100000 // 100 s behind, far outside PAWS's 1-tick window
	n := envInt(helperCountEnv)
	for i := 0; i < n; i++ {
		pkt := synPacket(loopback, loopback, uint16(cport), uint16(port), rand.Uint32(), old+uint32(i))
		if err := unix.Sendto(raw, pkt, 0, &unix.SockaddrInet4{Addr: loopback}); err != nil {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	fmt.Printf("RESULT sent=%d cport=%d tsval=%d ts_recent=%d\n", n, cport, old, uint32(ts))
	return nil
}

// synPacket builds an IPv4 TCP SYN with a timestamp option (NOP, NOP, TS).
func synPacket(src, dst [4]byte, sport, dport uint16, seq, tsval uint32) []byte {
	return tcpPacket(src, dst, sport, dport, seq, 0, 0x02, tsval, 0, nil)
}

// tcpPacket builds an IPv4 TCP segment whose only option is a timestamp
// (NOP, NOP, TS: the aligned layout the kernel's fast path expects).
func tcpPacket(src, dst [4]byte, sport, dport uint16, seq, ack uint32, flags byte, tsval, tsecr uint32, payload []byte) []byte {
	const ipLen, tcpLen = 20, 32
	p := make([]byte, ipLen+tcpLen+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = 64
	p[9] = unix.IPPROTO_TCP
	copy(p[12:16], src[:])
	copy(p[16:20], dst[:])
	binary.BigEndian.PutUint16(p[10:], checksum(p[:ipLen], 0))
	t := p[ipLen:]
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = (tcpLen / 4) << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], 65535)
	t[20], t[21], t[22], t[23] = 1, 1, 8, 10
	binary.BigEndian.PutUint32(t[24:], tsval)
	binary.BigEndian.PutUint32(t[28:], tsecr)
	copy(t[tcpLen:], payload)
	// pseudo-header: addresses, protocol, TCP length
	var sum uint32
	for i := 0; i < 4; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(src[i:])) + uint32(binary.BigEndian.Uint16(dst[i:]))
	}
	sum += unix.IPPROTO_TCP + uint32(len(t))
	binary.BigEndian.PutUint16(t[16:], checksum(t, sum))
	return p
}

// Queues of TCP_REPAIR_QUEUE (include/uapi/linux/tcp.h).
const (
	tcpRecvQueue = 1
	tcpSendQueue = 2
)

// pawsEstablished sends $COUNT data segments into an established
// connection, in window, from the client's address and port, but with a
// timestamp 100 s older than the client's clock: what the server sees when
// a NAT mixes a second client, with its own clock, into the 4-tuple. The
// client's sequence numbers come from TCP_REPAIR, which also keeps the real
// client quiet.
func pawsEstablished(time.Duration) error {
	client, server, err := connectPair(0)
	if err != nil {
		return err
	}
	cport, _ := localPort(client)
	sport, _ := localPort(server)
	fmt.Printf("READY pid=%d lport=%d port=%d\n", os.Getpid(), cport, sport)
	if line, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil || strings.TrimSpace(line) != "GO" {
		return fmt.Errorf("waiting for GO: %q %v", line, err)
	}
	unix.Write(client, []byte("hello"))
	buf := make([]byte, 16)
	unix.Read(server, buf)
	unix.Write(server, []byte("hi"))
	unix.Read(client, buf)
	time.Sleep(20 * time.Millisecond)
	ts, err := unix.GetsockoptInt(client, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP)
	if err != nil {
		return err
	}
	if err := unix.SetsockoptInt(client, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1); err != nil {
		return fmt.Errorf("TCP_REPAIR: %w", err)
	}
	seq := func(q int) (uint32, error) {
		if err := unix.SetsockoptInt(client, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, q); err != nil {
			return 0, err
		}
		v, err := unix.GetsockoptInt(client, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ)
		return uint32(v), err
	}
	sndNxt, err := seq(tcpSendQueue)
	if err != nil {
		return err
	}
	rcvNxt, err := seq(tcpRecvQueue)
	if err != nil {
		return err
	}
	raw, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		return err
	}
	old := uint32(ts) - 100000
	n := envInt(helperCountEnv)
	for i := 0; i < n; i++ {
		pkt := tcpPacket(loopback, loopback, uint16(cport), uint16(sport), sndNxt, rcvNxt, 0x18 /* PSH|ACK */, old+uint32(i), 0, []byte("stale"))
		if err := unix.Sendto(raw, pkt, 0, &unix.SockaddrInet4{Addr: loopback}); err != nil {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	// Nothing got through: the server has nothing to read.
	unix.SetNonblock(server, true)
	got, _ := unix.Read(server, buf)
	fmt.Printf("RESULT sent=%d tsval=%d ts=%d delivered=%d\n", n, old, uint32(ts), max(got, 0))
	return nil
}

func checksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// resetPair makes a connection with data the client has not read, then
// the server aborts it (SO_LINGER with a zero timeout): the server sends a
// reset, the client receives it in ESTABLISHED and its read fails.
func resetPair(time.Duration) error {
	client, server, err := connectPair(0)
	if err != nil {
		return err
	}
	cport, _ := localPort(client)
	sport, _ := localPort(server)
	fmt.Printf("READY pid=%d lport=%d port=%d\n", os.Getpid(), cport, sport)
	if line, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil || strings.TrimSpace(line) != "GO" {
		return fmt.Errorf("waiting for GO: %q %v", line, err)
	}
	unix.Write(client, []byte("request the server never answers"))
	time.Sleep(20 * time.Millisecond)
	if err := unix.SetsockoptLinger(server, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
		return err
	}
	unix.Close(server)
	time.Sleep(20 * time.Millisecond)
	buf := make([]byte, 64)
	_, err = unix.Read(client, buf)
	fmt.Printf("RESULT read_errno=%d\n", errnoOf(err))
	return nil
}
