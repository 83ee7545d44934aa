package e2e

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// The "refuse" helper's connects per second, and which of several senders
// it is (each has its own destinations).
const (
	helperRateEnv   = "TCPTRACE_E2E_RATE"
	helperSenderEnv = "TCPTRACE_E2E_SENDER"
)

// refusedConnects makes blocking connect()s to closed ports on loopback at a
// steady rate, each to a destination not used before (127.s.x.y for sender
// s, from 1, ports 1 to 60000), so that every one is a connect_refused of its own: tcptrace
// aggregates per destination, and a new destination is a new record in its
// ring buffer. On loopback the reset comes back within connect() itself.
func refusedConnects(d time.Duration) error {
	rate := envInt(helperRateEnv)
	if rate <= 0 {
		return fmt.Errorf("%s not set", helperRateEnv)
	}
	if err := readyAndWait(0); err != nil {
		return err
	}
	var made, refused int
	start := time.Now()
	for {
		elapsed := time.Since(start)
		if elapsed >= d {
			break
		}
		// Catch up to the schedule, then sleep: a steady rate, not bursts
		// of a whole second.
		if want := int(elapsed.Seconds() * float64(rate)); made >= want {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		a := made / 60000
		to := &unix.SockaddrInet4{Addr: [4]byte{127, byte(1 + envInt(helperSenderEnv)), byte(a >> 8), byte(a)}, Port: 1 + made%60000}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Connect(fd, to); err == unix.ECONNREFUSED {
			refused++
		}
		unix.Close(fd)
		made++
	}
	secs := time.Since(start).Seconds()
	fmt.Printf("RESULT connects=%d refused=%d rate=%.0f\n", made, refused, float64(made)/secs)
	return nil
}
