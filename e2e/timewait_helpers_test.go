package e2e

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

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
