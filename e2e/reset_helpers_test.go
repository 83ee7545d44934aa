package e2e

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

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
	if err := readyThenGo(cport, sport); err != nil {
		return err
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
