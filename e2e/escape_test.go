package e2e

import (
	"bufio"
	"bytes"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// evilComm is a name any process can give itself: an ESC sequence that
// turns a terminal red, and a newline followed by what looks like the time
// column of another event line. 15 bytes, all that comm keeps.
const evilComm = "\x1b[31mx\n00:00:00"

func init() {
	// The zerowin helper under evilComm. PR_SET_NAME names only the calling
	// thread, and BPF reports the name of the thread that sends: the
	// helper's goroutine stays on this thread.
	connHelpers["evilname"] = func(d time.Duration) error {
		runtime.LockOSThread()
		name, err := unix.BytePtrFromString(evilComm)
		if err != nil {
			return err
		}
		if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(name)), 0, 0, 0); err != nil {
			return err
		}
		return helper("zerowin", d)
	}
}

// A process named with an escape sequence and a newline makes real
// send_eagain events, traced with text output: neither the lines nor the
// summary carry the ESC or a forged line, and both show the name escaped.
func TestTextOutputEscapesProcessNames(t *testing.T) {
	requireEvents(t, "send_eagain")
	ns := newNetns(t)
	h := startHelper(t, ns, "evilname", 1500*time.Millisecond)
	args := []string{"-o", "text", "-e", "send_eagain", "--pid", itoa(h.PID)}
	if forcePath != "" {
		args = append(args, "--force-path", forcePath)
	}
	cmd := exec.Command(tcptraceBin, args...)
	var stdout bytes.Buffer
	var stderr syncBuffer
	cmd.Stdout = &stdout
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	ready := make(chan struct{})
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		r := bufio.NewReader(errPipe)
		signalled := false
		for {
			line, err := r.ReadBytes('\n')
			stderr.Write(line)
			if !signalled && bytes.Contains(line, []byte("tracing")) {
				signalled = true
				close(ready)
			}
			if err != nil {
				if !signalled {
					close(ready)
				}
				return
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatalf("tcptrace did not start tracing within 30 s; stderr: %q", stderr.String())
	}
	h.run()
	cmd.Process.Signal(syscall.SIGINT)
	<-copied
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tcptrace: %v; stderr: %q", err, stderr.String())
	}

	out, errOut := stdout.String(), stderr.String()
	t.Logf("stdout: %q\nstderr: %q", out, errOut)
	for name, s := range map[string]string{"stdout": out, "stderr": errOut} {
		if strings.ContainsRune(s, 0x1b) {
			t.Errorf("%s carries an ESC byte", name)
		}
	}
	shown := regexp.QuoteMeta(`\x1b[31mx\x0a00:00:00`)
	// Every line of stdout is the header or one event of the helper, its
	// name escaped; a line of its own starting 00:00:00 would be forged.
	// A host that runs containers adds the CONTAINER column ("-" for the
	// helper, in none).
	event := regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} +` + itoa(h.PID) + ` ` + shown + ` +(- +)?send_eagain `)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "TIME ") {
		t.Fatalf("want the header and events, got %q", out)
	}
	for _, l := range lines[1:] {
		if !event.MatchString(l) {
			t.Errorf("not an event line of pid %d under its escaped name: %q", h.PID, l)
		}
	}
	byConn := regexp.MustCompile(`(?m)^  send_eagain +` + itoa(h.PID) + ` ` + shown + ` 127\.0\.0\.1:\d+ +-> 127\.0\.0\.1:\d+ +\d+$`)
	if !byConn.MatchString(errOut) {
		t.Errorf("summary has no by-connection line for pid %d under its escaped name", h.PID)
	}
	for _, l := range strings.Split(errOut, "\n") {
		if strings.HasPrefix(l, "00:00:00") {
			t.Errorf("forged line in stderr: %q", l)
		}
	}
}
