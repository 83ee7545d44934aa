package main

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/tcptrace/tcptrace/tracer"
)

// The `tracing` line names each event and its path in a word; the hooks,
// which made it 1,300 characters long, are left to --list-probes.
func TestDescribe(t *testing.T) {
	long := "tp_btf/timer_start, timer_expire_entry, timer_expire_exit (callback tcp_delack_timer), per-CPU DelayedACKs"
	var every []tracer.ProbeStatus
	for _, e := range tracer.AllEventTypes() {
		every = append(every, tracer.ProbeStatus{Events: []tracer.EventType{e}, Path: tracer.PathTracepoint, Hooks: long})
	}
	if got, want := describe(every), fmt.Sprintf("all %d events via tracepoint (the hooks: tcptrace --list-probes)", len(every)); got != want {
		t.Errorf("every event on one path:\n got %s\nwant %s", got, want)
	}

	some := []tracer.ProbeStatus{
		{Events: []tracer.EventType{tracer.SendEAGAIN}, Path: tracer.PathFentry, Hooks: long},
		{Events: []tracer.EventType{tracer.SendBlocked}, Hooks: long}, // no path: not traced
		{Events: []tracer.EventType{tracer.ListenOverflow}, Path: tracer.PathKprobe, Hooks: long},
		{Events: []tracer.EventType{tracer.SynDrop, tracer.SynCookie}, Path: tracer.PathFentry, Hooks: long},
	}
	want := "send_eagain, syn_drop, syn_cookie via fentry; listen_overflow via kprobe (the hooks: tcptrace --list-probes)"
	if got := describe(some); got != want {
		t.Errorf("mixed paths:\n got %s\nwant %s", got, want)
	}

	// Every event on three paths, as on a kernel that lacks some
	// tracepoints: each event named once, each path once, no hooks.
	paths := []tracer.ProbePath{tracer.PathTracepoint, tracer.PathFentry, tracer.PathKprobe}
	for i := range every {
		every[i].Path = paths[i%3]
	}
	got := describe(every)
	for _, e := range tracer.AllEventTypes() {
		if n := len(regexp.MustCompile(`\b`+e.String()+`\b`).FindAllString(got, -1)); n != 1 {
			t.Errorf("%s named %d times: %s", e, n, got)
		}
	}
	for _, p := range paths {
		if n := strings.Count(got, " via "+p.String()); n != 1 {
			t.Errorf("%s named %d times: %s", p, n, got)
		}
	}
	if strings.Contains(got, "tp_btf") || strings.Contains(got, "\n") {
		t.Errorf("hooks or several lines: %s", got)
	}
}

func TestVersionString(t *testing.T) {
	info := func(version string, settings ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{Main: debug.Module{Path: "github.com/tcptrace/tcptrace", Version: version}}
		for i := 0; i+1 < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi
	}
	const rev = "19f8330d7641442fdc7574631da7187b1a7892a6"
	for _, c := range []struct {
		ldflags string
		bi      *debug.BuildInfo
		want    string
	}{
		{"v1.2.0", info("v0.0.0-20261205151100-19f8330d7641", "vcs.revision", rev), "v1.2.0"},
		{"", info("v0.0.0-20261205151100-19f8330d7641+dirty", "vcs.revision", rev, "vcs.modified", "true"),
			"v0.0.0-20261205151100-19f8330d7641+dirty (commit 19f8330d7641, modified)"},
		{"", info("v1.3.0", "vcs", "git", "vcs.revision", rev, "vcs.modified", "false"), "v1.3.0 (commit 19f8330d7641)"},
		{"", info("(devel)", "vcs.revision", rev, "vcs.modified", "true"), "dev (commit 19f8330d7641, modified)"},
		{"", info("(devel)"), "dev (no commit recorded: built outside a git checkout, or with -buildvcs=false)"},
		{"", nil, "dev (no build information in the binary)"},
	} {
		if got := versionString(c.ldflags, c.bi); got != c.want {
			t.Errorf("versionString(%q, %+v):\n got %s\nwant %s", c.ldflags, c.bi, got, c.want)
		}
	}
}

// The binary itself: --help on stdout with exit 0, bad input one line on
// stderr with exit 2. None of it needs root.
func TestBinaryHelpAndBadInput(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "tcptrace")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	run := func(args ...string) (stdout, stderr string, code int) {
		cmd := exec.Command(bin, args...)
		var o, e strings.Builder
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			code = ee.ExitCode()
		case err != nil:
			t.Fatal(err)
		}
		return o.String(), e.String(), code
	}
	for _, h := range []string{"--help", "-h"} {
		out, errOut, code := run(h)
		if code != 0 || !strings.HasPrefix(out, "tcptrace: one annotated line") || !strings.Contains(out, "--list-probes") || errOut != "" {
			t.Errorf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", h, code, out, errOut)
		}
	}
	if out, _, code := run("--version"); code != 0 || !strings.HasPrefix(out, "tcptrace ") {
		t.Errorf("--version: exit %d, %q", code, out)
	}
	// -d 1: were the bad value taken, a run as root would end anyway.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--port", "0"}, "--port"},
		{[]string{"--port", "70000"}, "1-65535"},
		{[]string{"-e", ""}, "--events"},
		{[]string{"-p", ""}, "--pid"},
		{[]string{"--bogus"}, "--bogus"},
	} {
		out, errOut, code := run(append(c.args, "-d", "1")...)
		if code != 2 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "tcptrace: ") || !strings.Contains(errOut, c.want) {
			t.Errorf("%q: exit %d, want 2 and one line on stderr naming %s\nstdout: %q\nstderr: %q", c.args, code, c.want, out, errOut)
		}
	}
}
