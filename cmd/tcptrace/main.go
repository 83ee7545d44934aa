// Command tcptrace streams one annotated line per TCP pathology the kernel
// shows: what happened, to which connection and process, the numbers that
// prove it, and what to change.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/tcptrace/tcptrace/tracer"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

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
	o, err := parseFlags(args, stderr)
	if err != nil {
		return usageError{err}
	}
	switch {
	case o.help:
		return nil
	case o.version:
		fmt.Fprintln(stdout, "tcptrace", version)
		return nil
	}
	if err := checkPrivileges(); err != nil {
		return usageError{err}
	}
	if err := checkPIDs(o.tracer.PIDs); err != nil {
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
	return run(ctx, o, stdout, stderr)
}

// run traces until a signal, --duration, or the traced processes exit.
func run(ctx context.Context, o *options, stdout, stderr io.Writer) error {
	t, err := tracer.New(o.tracer)
	if err != nil {
		return usageError{err}
	}
	defer t.Close()
	printUnsupported(stderr, t.Status())
	if err := t.OwnerError(); err != nil {
		fmt.Fprintf(stderr, "tcptrace: some socket owners may be unknown: %v\n", err)
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

	w, err := tracer.NewWriter(o.output, stdout)
	if err != nil {
		return usageError{err}
	}
	sum := tracer.NewSummary()
	var writeErr error
	fmt.Fprintf(stderr, "tcptrace: tracing %s\n", describe(t.Status()))
	err = t.Run(ctx, func(e tracer.Event) {
		sum.Add(e)
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
	tracer.WriteOwnersUnknown(stderr, t.OwnersUnknown())
	tracer.WriteCounterChecks(stderr, t.CounterChecks())
	if writeErr != nil {
		return fmt.Errorf("writing events: %w", writeErr)
	}
	return t.Close()
}

// describe lists the events traced and the path each uses, for the
// `tracing` line.
func describe(st []tracer.ProbeStatus) string {
	s := ""
	for _, p := range st {
		if p.Path == 0 {
			continue
		}
		if s != "" {
			s += ", "
		}
		s += fmt.Sprintf("%s via %s (%s)", p.Names(), p.Path, p.Hooks)
	}
	return s
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
