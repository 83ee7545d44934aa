// Command tcptrace streams one annotated line per TCP pathology the kernel
// shows: what happened, to which connection and process, the numbers that
// prove it, and what to change.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/tcptrace/tcptrace/tracer"
)

// version is set at build time with -ldflags "-X main.version=..." (make
// build does); a plain go build leaves it empty and versionString reads
// what Go recorded in the binary instead.
var version string

// usageError is a problem with what the user asked for: exit code 2.
type usageError struct{ error }

func main() {
	os.Exit(exitCode(mainErr(os.Args[1:], os.Stdout, os.Stderr)))
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(os.Stderr, "tcptrace: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

func mainErr(args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stdout)
	if err != nil {
		return usageError{err}
	}
	switch {
	case o.help:
		return nil
	case o.version:
		bi, _ := debug.ReadBuildInfo()
		fmt.Fprintln(stdout, "tcptrace", versionString(version, bi))
		return nil
	}
	// What a container was not given is the user's to fix: exit 2, the
	// missing capability named.
	if err := tracer.CheckPrivileges(o.tracer); err != nil {
		return usageError{err}
	}
	if err := checkBTF(); err != nil {
		return usageError{err}
	}
	if err := checkPIDs(o.tracer.PIDs); err != nil {
		return usageError{err}
	}
	if err := resolveCgroups(o); err != nil {
		return usageError{err}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// On the way out, ignore rather than restore the default action: a
	// SIGINT that arrives while tcptrace is exiting on its own (--duration,
	// the traced processes gone) would otherwise kill it after its summary,
	// with a signal's exit status instead of 0.
	defer func() {
		signal.Ignore(os.Interrupt, syscall.SIGTERM)
		stop()
	}()
	if o.listProbes {
		return listProbes(o, stdout)
	}
	ml, err := metricsListener(o)
	if err != nil {
		return usageError{err}
	}
	return run(ctx, o, ml, stdout, stderr)
}

// run traces until a signal, --duration, or the traced processes exit.
func run(ctx context.Context, o *options, ml net.Listener, stdout, stderr io.Writer) error {
	// What the user can get wrong was checked above; a failure now (a
	// verifier rejection, no probe path for any event, a map the kernel
	// refuses) is not bad input.
	var ms *metricsServer
	if ml != nil {
		ms = serveMetrics(ml, o.webConfigFile, stderr)
	}
	t, err := tracer.New(o.tracer)
	if err != nil {
		ms.stop()
		return err
	}
	defer t.Close()
	// Stopped before the tracer closes: a scrape reads its maps.
	defer ms.stop()
	printUnsupported(stderr, t.Status())
	if err := t.OwnerError(); err != nil {
		fmt.Fprintf(stderr, "tcptrace: some socket owners may be unknown: %s\n", oneLine(err))
	}
	if err := t.BaselineError(); err != nil {
		fmt.Fprintf(stderr, "tcptrace: some first SYNs on a CPU will be judged by the listener's state (see \"SYNs not judged\" in the summary): %s\n", oneLine(err))
	}

	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	if len(o.tracer.PIDs) > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go watchPIDs(ctx, o.tracer.PIDs, stderr, cancel)
	}

	// A CONTAINER column where there are containers to tell apart, or a
	// container was asked for.
	w, err := tracer.NewWriterContainers(o.output, stdout, o.container != "" || tracer.HostRunsContainers())
	if err != nil {
		return usageError{err}
	}
	sum := tracer.NewSummary()
	var metrics *tracer.Metrics
	if ms != nil {
		bi, _ := debug.ReadBuildInfo()
		metrics = tracer.NewMetrics(t, versionString(version, bi), o.maxSeries)
		ms.ready(metrics, t.Status(), stderr)
		go sweepMetrics(ctx, metrics)
	}
	var writeErr error
	fmt.Fprintf(stderr, "tcptrace: tracing %s\n", describe(t.Status()))
	if ml != nil {
		fmt.Fprintf(stderr, "tcptrace: serving metrics on %s/metrics\n", ml.Addr())
	}
	err = t.Run(ctx, func(e tracer.Event) {
		sum.Add(e)
		if metrics != nil {
			metrics.Add(e)
		}
		if writeErr == nil {
			writeErr = w.Write(e)
		}
	}, func() {
		if writeErr == nil {
			writeErr = w.Flush()
		}
	})
	if err != nil {
		return err
	}
	sum.Write(stderr, t.Lost())
	tracer.WriteSkipped(stderr, t.SkippedRuns())
	tracer.WriteUnjudgedSYNs(stderr, t.UnjudgedSYNs())
	tracer.WriteRetransmitFolded(stderr, t.RetransmitFolded())
	tracer.WriteSynRetransmitsUnseen(stderr, t.SynRetransmitsUnseen())
	tracer.WriteRTOUnwatched(stderr, t.RTOUnwatched())
	tracer.WriteOwnersUnknown(stderr, t.OwnersUnknown())
	tracer.WriteCounterChecks(stderr, t.CounterChecks())
	if writeErr != nil {
		return fmt.Errorf("writing events: %w", writeErr)
	}
	if err := ms.stop(); err != nil {
		return fmt.Errorf("serving metrics: %w", err)
	}
	return t.Close()
}

// describe says what is traced and the probe path of each event, grouped by
// path, in one short line; --list-probes shows the hooks.
func describe(st []tracer.ProbeStatus) string {
	var paths []tracer.ProbePath
	names := map[tracer.ProbePath][]string{}
	n := 0
	for _, p := range st {
		if p.Path == 0 {
			continue
		}
		if names[p.Path] == nil {
			paths = append(paths, p.Path)
		}
		for _, e := range p.Events {
			names[p.Path] = append(names[p.Path], e.String())
			n++
		}
	}
	const hooks = " (the hooks: tcptrace --list-probes)"
	if len(paths) == 1 && n == len(tracer.AllEventTypes()) {
		return fmt.Sprintf("all %d events via %s%s", n, paths[0], hooks)
	}
	var groups []string
	for _, p := range paths {
		groups = append(groups, strings.Join(names[p], ", ")+" via "+p.String())
	}
	return strings.Join(groups, "; ") + hooks
}

// versionString is the version set with -ldflags, or else the one Go
// recorded: a go build in a git checkout stamps the main module's version
// (a pseudo-version made of the commit's time and hash, or its tag) and the
// commit, marked modified when the work tree had changes.
func versionString(ldflags string, bi *debug.BuildInfo) string {
	if ldflags != "" {
		return ldflags
	}
	v := "dev"
	if bi == nil {
		return v + " (no build information in the binary)"
	}
	if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	rev, modified := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return v + " (no commit recorded: built outside a git checkout, or with -buildvcs=false)"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified {
		return v + " (commit " + rev + ", modified)"
	}
	return v + " (commit " + rev + ")"
}

func printUnsupported(w io.Writer, st []tracer.ProbeStatus) {
	for _, p := range st {
		if p.Path != 0 {
			continue
		}
		msg := fmt.Sprintf("tcptrace: %s is not supported on this kernel, continuing without it:", p.Names())
		for i, f := range p.Tried {
			if i > 0 {
				msg += ";"
			}
			msg += fmt.Sprintf(" %s (%s): %v", f.Path, f.Hooks, f.Err)
		}
		fmt.Fprintln(w, msg)
	}
}

// listProbes loads every path once to find which one each event would use.
// That no event works at all is an answer too, not an error.
func listProbes(o *options, stdout io.Writer) error {
	var status []tracer.ProbeStatus
	t, err := tracer.New(o.tracer)
	var none *tracer.NoProbeError
	switch {
	case errors.As(err, &none):
		status = none.Status
	case err != nil:
		return err
	default:
		defer t.Close()
		status = t.Status()
	}
	for _, p := range status {
		if p.Path != 0 {
			fmt.Fprintf(stdout, "%-32s %-11s %s\n", p.Names(), p.Path, p.Hooks)
		} else {
			fmt.Fprintf(stdout, "%-32s %-11s no probe path works on this kernel\n", p.Names(), "none")
		}
		for _, f := range p.Tried {
			kind := "error"
			if f.Unsupported {
				kind = "unsupported"
			}
			fmt.Fprintf(stdout, "%-32s   not %s (%s): %s: %v\n", "", f.Path, f.Hooks, kind, f.Err)
		}
	}
	if t != nil {
		return t.Close()
	}
	return nil
}

// oneLine joins the lines of an error (errors.Join's, one per namespace) so
// that a warning stays one line.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }
