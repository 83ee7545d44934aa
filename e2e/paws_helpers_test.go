package e2e

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"time"

	"golang.org/x/sys/unix"
)

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
	if err := readyThenGo(cport, sport); err != nil {
		return err
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
