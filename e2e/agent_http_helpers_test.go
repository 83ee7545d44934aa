package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// httpGetIn makes one GET from inside the network namespace: the socket is
// made on a thread that entered it (an http.Client would dial from another
// goroutine, on another thread).
func httpGetIn(netnsName, addr, path string) (int, string, error) {
	type result struct {
		code int
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		fd, err := unix.Open(filepath.Join("/run/netns", netnsName), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- result{err: err}
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			done <- result{err: err}
			return
		}
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{resp.StatusCode, string(b), err}
	}()
	r := <-done
	return r.code, r.body, r.err
}

// sample is one line of an exposition: its labels and value.
type sample struct {
	labels map[string]string
	value  float64
}

// metricSeries reads the samples of one metric from a text exposition.
func metricSeries(exposition, name string) []sample {
	var out []sample
	label := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
	for _, line := range strings.Split(exposition, "\n") {
		rest, ok := strings.CutPrefix(line, name+"{")
		if !ok {
			continue
		}
		i := strings.LastIndex(rest, "} ")
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(rest[i+2:], 64)
		if err != nil {
			continue
		}
		s := sample{labels: map[string]string{}, value: v}
		for _, m := range label.FindAllStringSubmatch(rest[:i], -1) {
			s.labels[m[1]] = m[2]
		}
		out = append(out, s)
	}
	return out
}

// allEventNames are the events tcptrace knows, from its --help.
func allEventNames(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command(tcptraceBin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("tcptrace --help: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`only these events \(comma-separated\): ([a-z_, ]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("tcptrace --help lists no events:\n%s", out)
	}
	return strings.Split(string(m[1]), ", ")
}
