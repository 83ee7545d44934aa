package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() {
	connHelpers["exchange"] = exchange
}

// exchange: one loopback connection whose two ends both write small
// messages (TCP_NODELAY, non-blocking) and read what comes, for d after GO,
// as two services talking over a long-lived connection do. It reports the
// EAGAINs each end saw and when each direction last moved data after its
// longest pause (the test cuts the path meanwhile).
func exchange(d time.Duration) error {
	client, server, err := connectPair(0)
	if err != nil {
		return err
	}
	lport, _ := localPort(client)
	sport, _ := localPort(server)
	for _, fd := range []int{client, server} {
		if err := unix.SetNonblock(fd, true); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			return err
		}
	}
	if err := readyThenGo(lport, sport); err != nil {
		return err
	}
	msg, buf := make([]byte, 512), make([]byte, 64<<10)
	var eagain [2]uint64
	var lastRead [2]time.Time // by reader: 0 the client, 1 the server
	var longest [2]time.Duration
	start := time.Now()
	lastRead[0], lastRead[1] = start, start
	for time.Since(start) < d {
		for i, fd := range []int{client, server} {
			if _, err := unix.Write(fd, msg); errors.Is(err, unix.EAGAIN) {
				eagain[i]++
			} else if err != nil {
				return err
			}
			if n, _ := unix.Read(fd, buf); n > 0 {
				now := time.Now()
				longest[i] = max(longest[i], now.Sub(lastRead[i]))
				lastRead[i] = now
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	fmt.Printf("RESULT client_eagains=%d server_eagains=%d client_longest_ms=%d server_longest_ms=%d\n",
		eagain[0], eagain[1], longest[0].Milliseconds(), longest[1].Milliseconds())
	return nil
}

func init() {
	connHelpers["rtoside"] = rtoSide
}

// rtoSide: one end of a connection between two processes, as two services
// talking over a long-lived connection. TCPTRACE_E2E_PORT unset: it listens
// (READY's port is the listener's) and accepts one connection; set: it
// connects to that port. After GO it writes 4 KB messages (TCP_NODELAY,
// non-blocking) and reads what comes, until STOP; PAUSE and RESUME stop and
// restart its writes. RESULT says how many writes failed with EAGAIN and
// when its reads resumed after their longest pause (unix ms): when the
// peer's data moved again. EXIT (or the end of its input) closes it.
func rtoSide(time.Duration) error {
	var fd int
	var err error
	if p := os.Getenv("TCPTRACE_E2E_PORT"); p != "" {
		port, _ := strconv.Atoi(p)
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0); err != nil {
			return err
		}
		if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}); err != nil {
			return err
		}
	} else {
		ln, err := listenTCP4([4]byte{127, 0, 0, 1}, 0, 1)
		if err != nil {
			return err
		}
		lport, _ := localPort(ln)
		fmt.Printf("READY pid=%d lport=%d port=%d\n", os.Getpid(), lport, lport)
		if fd, _, err = unix.Accept(ln); err != nil {
			return err
		}
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return err
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return err
	}
	if os.Getenv("TCPTRACE_E2E_PORT") != "" {
		lport, _ := localPort(fd)
		fmt.Printf("READY pid=%d lport=%d port=%s\n", os.Getpid(), lport, os.Getenv("TCPTRACE_E2E_PORT"))
	}
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() || in.Text() != "GO" {
		return fmt.Errorf("waiting for GO: %q", in.Text())
	}
	var writing, stop atomic.Bool
	writing.Store(true)
	exit := make(chan struct{})
	go func() {
		defer close(exit)
		for in.Scan() {
			switch in.Text() {
			case "PAUSE":
				writing.Store(false)
			case "RESUME":
				writing.Store(true)
			case "STOP":
				stop.Store(true)
			case "EXIT":
				return
			}
		}
	}()
	// 2 MB/s each way: the send buffer (4 MB at most, tcp_wmem) fills
	// within seconds once nothing is acknowledged.
	msg, buf := make([]byte, 4096), make([]byte, 64<<10)
	var eagains uint64
	var longest time.Duration
	var resumed, lastRead time.Time
	lastRead = time.Now()
	for !stop.Load() {
		if writing.Load() {
			if _, err := unix.Write(fd, msg); errors.Is(err, unix.EAGAIN) {
				eagains++
			} else if err != nil {
				return fmt.Errorf("write at %s: %w", time.Now().Format("15:04:05.000"), err)
			}
		}
		for {
			n, err := unix.Read(fd, buf)
			if err != nil && !errors.Is(err, unix.EAGAIN) {
				return fmt.Errorf("read at %s: %w", time.Now().Format("15:04:05.000"), err)
			}
			if n <= 0 {
				break
			}
			now := time.Now()
			if gap := now.Sub(lastRead); gap > longest {
				longest, resumed = gap, now
			}
			lastRead = now
		}
		time.Sleep(2 * time.Millisecond)
	}
	fmt.Printf("RESULT eagains=%d longest_ms=%d resumed_unix_ms=%d\n", eagains, longest.Milliseconds(), resumed.UnixMilli())
	// The socket stays open until both ends have stopped: closing it with
	// data unread sends a reset to a peer still writing.
	<-exit
	return nil
}

func init() {
	connHelpers["messages"] = messages
}

// messages: one loopback connection where the client sends requests of two
// 1000-byte segments (TCP_NODELAY, a write each) and waits for the server's
// 1-byte reply before the next, for d after GO. The client never has data
// unsent while its segments are in flight: a tail loss probe finds no new
// data to send and resends the last segment (tcp_send_loss_probe()).
func messages(d time.Duration) error {
	client, server, err := connectPair(0)
	if err != nil {
		return err
	}
	if err := unix.SetsockoptInt(client, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return err
	}
	if err := unix.SetsockoptInt(server, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return err
	}
	lport, _ := localPort(client)
	sport, _ := localPort(server)
	if err := readyThenGo(lport, sport); err != nil {
		return err
	}
	const seg = 1000
	served := make(chan error, 1)
	go func() {
		buf := make([]byte, 2*seg)
		for {
			for got := 0; got < len(buf); {
				n, err := unix.Read(server, buf[got:])
				if err != nil || n == 0 {
					served <- err
					return
				}
				got += n
			}
			if _, err := unix.Write(server, buf[:1]); err != nil {
				served <- err
				return
			}
		}
	}()
	msg, reply := make([]byte, seg), make([]byte, 1)
	var requests uint64
	for start := time.Now(); time.Since(start) < d; requests++ {
		for range 2 {
			if _, err := unix.Write(client, msg); err != nil {
				return err
			}
		}
		if n, err := unix.Read(client, reply); err != nil || n != 1 {
			return fmt.Errorf("reply %d: %d bytes, %v", requests, n, err)
		}
	}
	unix.Close(client)
	<-served
	fmt.Printf("RESULT requests=%d\n", requests)
	return nil
}

// rtxTimer is a socket's retransmission timer as ss shows it.
type rtxTimer struct {
	left     time.Duration // until it fires
	timeouts int           // icsk_retransmits: firings since data was last acknowledged
}

var ssRetransmitTimer = regexp.MustCompile(`^\S+\s+\S+\s+\S+:(\d+)\s+\S+\s+timer:\(on,([0-9.a-z]+),(\d+)\)`)

// retransmitTimers: the established sockets of the namespace whose
// retransmission timer is armed, by local port.
func (n *netns) retransmitTimers() map[int]rtxTimer {
	n.t.Helper()
	out := map[int]rtxTimer{}
	for _, line := range strings.Split(n.run("ss", "-tnoH", "state", "established"), "\n") {
		m := ssRetransmitTimer.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		port, _ := strconv.Atoi(m[1])
		left, ok := ssDuration(m[2])
		timeouts, _ := strconv.Atoi(m[3])
		if ok {
			out[port] = rtxTimer{left, timeouts}
		}
	}
	return out
}

// ssDuration reads ss's timer durations, as iproute2's print_ms_timer()
// writes them: minutes, then seconds ending in "sec", or in "." when
// milliseconds follow, then milliseconds: "980ms", "4.940ms" (4.94 s),
// "9sec", "12sec", "1min2sec", "1min", "12min". (Reading "4.940ms" as
// milliseconds made every timer between 1 and 10 s look due at once.)
func ssDuration(s string) (time.Duration, bool) {
	m := ssTimerDuration.FindStringSubmatch(s)
	if m == nil || s == "" {
		return 0, false
	}
	var d time.Duration
	for i, unit := range []time.Duration{time.Minute, time.Second, time.Millisecond} {
		if m[i+1] != "" {
			v, err := strconv.Atoi(m[i+1])
			if err != nil {
				return 0, false
			}
			d += time.Duration(v) * unit
		}
	}
	return d, true
}

var ssTimerDuration = regexp.MustCompile(`^(?:(\d+)min)?(?:(\d+)(?:sec|\.))?(?:(\d+)ms)?$`)

func TestSSDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"980ms":    980 * time.Millisecond,
		"4.940ms":  4940 * time.Millisecond,
		"9.005ms":  9005 * time.Millisecond,
		"9sec":     9 * time.Second,
		"12sec":    12 * time.Second,
		"1min2sec": 62 * time.Second,
		"1min":     time.Minute,
		"soon":     0,
	} {
		got, ok := ssDuration(in)
		if want == 0 {
			if ok {
				t.Errorf("ssDuration(%q) = %v, want an error", in, got)
			}
			continue
		}
		if !ok || got != want {
			t.Errorf("ssDuration(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
}
