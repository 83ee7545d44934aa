package e2e

import (
	"bufio"
	"fmt"
	"os"
	"strings"
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
