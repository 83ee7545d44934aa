package main

import (
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
	o, err = parseFlags([]string{"--force-path", "kprobe"}, io.Discard)
	if err != nil || o.tracer.ForcePath != tracer.PathKprobe {
		t.Errorf("force-path: %+v %v", o, err)
	}
}

func TestParseFlagsErrors(t *testing.T) {
	for args, want := range map[string]string{
		"--bogus":             "unknown flag: --bogus",
		"-p abc":              `invalid pid "abc"`,
		"-p 0":                `invalid pid "0"`,
		"-e nosuch":           `unknown event "nosuch"`,
		"-4 -6":               "exclude each other",
		"-o xml":              `unknown output format "xml"`,
		"-d soon":             `invalid --duration "soon"`,
		"--interval 0":        "--interval must be positive",
		"--port 70000":        "invalid argument",
		"--force-path uprobe": `unknown probe path "uprobe"`,
		"extra":               `unexpected argument "extra"`,
	} {
		_, err := parseFlags(strings.Fields(args), io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", args, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error is not one line: %q", args, err)
		}
	}
}

func TestHelpAndVersionNeedNoPrivileges(t *testing.T) {
	var out strings.Builder
	if err := mainErr([]string{"--version"}, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "tcptrace ") {
		t.Errorf("--version: %q %v", out.String(), err)
	}
	var help strings.Builder
	if err := mainErr([]string{"-h"}, io.Discard, &help); err != nil || !strings.Contains(help.String(), "--pid") {
		t.Errorf("-h: %v\n%s", err, help.String())
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
