package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
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
	fmt.Printf("READY pid=%d lport=%d port=%d\n", os.Getpid(), lport, sport)
	if line, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil || strings.TrimSpace(line) != "GO" {
		return fmt.Errorf("waiting for GO: %q %v", line, err)
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
