package main

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/tracer"
)

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-p", "42,43", "--pid", "7", "--port", "8080", "-6", "-e", "send_eagain", "-d", "30", "--interval", "500ms", "-o", "json"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := tracer.Options{PIDs: []uint32{42, 43, 7}, Port: 8080, Family: 6, Events: []tracer.EventType{tracer.SendEAGAIN}, Interval: 500 * time.Millisecond}
	if !reflect.DeepEqual(o.tracer, want) {
		t.Errorf("got %+v\nwant %+v", o.tracer, want)
	}
	if o.duration != 30*time.Second || o.output != "json" {
		t.Errorf("duration %v output %s", o.duration, o.output)
	}

	o, err = parseFlags(nil, io.Discard)
	if err != nil || o.tracer.Interval != time.Second || o.output != "text" || o.duration != 0 {
		t.Errorf("defaults: %+v %v", o, err)
	}
	o, err = parseFlags([]string{"--metrics", ":9464", "-o", "none", "--metrics-max-series", "50", "--web.config.file", "w.yml"}, io.Discard)
	if err != nil || o.metrics != ":9464" || o.output != "none" || o.maxSeries != 50 || o.webConfigFile != "w.yml" {
		t.Errorf("metrics: %+v %v", o, err)
	}
	o, err = parseFlags([]string{"--force-path", "kprobe"}, io.Discard)
	if err != nil || o.tracer.ForcePath != tracer.PathKprobe {
		t.Errorf("force-path: %+v %v", o, err)
	}
}

func TestParseFlagsErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "unknown flag: --bogus"},
		{[]string{"-p", "abc"}, `invalid pid "abc"`},
		{[]string{"-p", "0"}, `invalid pid "0"`},
		{[]string{"-p", ""}, "--pid needs at least one pid"},
		{[]string{"-e", "nosuch"}, `unknown event "nosuch"`},
		{[]string{"-e", ""}, "--events needs at least one event (known: send_eagain, "},
		{[]string{"--events="}, "--events needs at least one event"},
		{[]string{"-e", "send_eagain,"}, `unknown event ""`},
		{[]string{"-4", "-6"}, "exclude each other"},
		{[]string{"-o", "xml"}, `unknown output format "xml"`},
		{[]string{"-d", "soon"}, `invalid --duration "soon"`},
		{[]string{"--interval", "0"}, "--interval must be positive"},
		{[]string{"--port", "0"}, `invalid --port "0": want a port number, 1-65535`},
		{[]string{"--port", "70000"}, `invalid --port "70000": want a port number, 1-65535`},
		{[]string{"--port", "-1"}, `invalid --port "-1"`},
		{[]string{"--port", "http"}, `invalid --port "http"`},
		{[]string{"--port", ""}, `invalid --port ""`},
		{[]string{"--force-path", "uprobe"}, `unknown probe path "uprobe"`},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--metrics-max-series", "0"}, "--metrics-max-series must be positive, got 0"},
		{[]string{"--container", "abc"}, `invalid --container "abc": want a container id or a prefix of it, at least 4 hex digits`},
		{[]string{"--container", "nginx"}, `invalid --container "nginx"`},
		{[]string{"--cgroup", "system.slice"}, `invalid --cgroup "system.slice": want a path from the cgroup hierarchy's root`},
		{[]string{"--cgroup", "/a", "--container", "abcd"}, "--cgroup and --container exclude each other"},
		{[]string{"--web.config.file", "web.yml"}, "--web.config.file needs --metrics"},
	} {
		_, err := parseFlags(c.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.args, err, c.want)
		}
		if err != nil && (strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), "strconv")) {
			t.Errorf("%q: error is not one line in the tool's words: %q", c.args, err)
		}
	}
	for _, port := range []string{"1", "65535", " 443"} {
		if o, err := parseFlags([]string{"--port", port}, io.Discard); err != nil || fmt.Sprint(o.tracer.Port) != strings.TrimSpace(port) {
			t.Errorf("--port %q: %+v %v", port, o, err)
		}
	}
}

// The help is asked for, not an error: stdout, so that it can be paged.
func TestHelpAndVersionNeedNoPrivileges(t *testing.T) {
	var out, errOut strings.Builder
	if err := mainErr([]string{"--version"}, &out, &errOut); err != nil || !strings.HasPrefix(out.String(), "tcptrace ") {
		t.Errorf("--version: %q %v", out.String(), err)
	}
	for _, h := range []string{"-h", "--help"} {
		out.Reset()
		errOut.Reset()
		if err := mainErr([]string{h}, &out, &errOut); err != nil || !strings.Contains(out.String(), "--pid") || errOut.Len() != 0 {
			t.Errorf("%s: %v\nstdout:\n%s\nstderr:\n%s", h, err, out.String(), errOut.String())
		}
	}
}

func TestExitCodes(t *testing.T) {
	if c := exitCode(usageError{errTest}); c != 2 {
		t.Errorf("usage error exit %d", c)
	}
	if c := exitCode(errTest); c != 1 {
		t.Errorf("runtime error exit %d", c)
	}
	if c := exitCode(nil); c != 0 {
		t.Errorf("success exit %d", c)
	}
}

var errTest = io.ErrUnexpectedEOF
