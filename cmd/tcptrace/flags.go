package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/tcptrace/tcptrace/tracer"
)

// options is everything the command line says.
type options struct {
	tracer   tracer.Options
	duration time.Duration
	output   string
	// metrics: the address /metrics is served on ("": none), with the
	// series cap and exporter-toolkit's web configuration file.
	metrics       string
	maxSeries     int
	webConfigFile string
	// cgroup and container: --cgroup PATH, --container ID; resolved to
	// tracer.Options.Cgroups once the privileges are checked.
	cgroup     string
	container  string
	listProbes bool
	help       bool
	version    bool
}

const usageHead = `tcptrace: one annotated line per TCP pathology, as it happens.

Usage:
  sudo tcptrace [flags]              trace the whole host
  sudo tcptrace --pid 4242 [flags]   trace the sockets of one process

Flags:
`

// parseFlags turns argv into options; any problem is one error line. The
// help goes to stdout, as asked for, so that `tcptrace --help | less` works.
func parseFlags(args []string, stdout io.Writer) (*options, error) {
	o := &options{}
	fs := pflag.NewFlagSet("tcptrace", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	pids := fs.StringSliceP("pid", "p", nil, "only sockets of these processes, threads included (comma-separated)")
	// A string, not a Uint16: pflag's own parse errors quote strconv.
	port := fs.String("port", "", "only connections with local or remote port `N`, 1-65535")
	fs.StringVar(&o.cgroup, "cgroup", "", "only processes in this cgroup (v2 `PATH`, e.g. /system.slice/nginx.service) and below it")
	fs.StringVar(&o.container, "container", "", "only processes of this container (full `ID` or a unique prefix)")
	v4 := fs.BoolP("ipv4", "4", false, "only IPv4 connections")
	v6 := fs.BoolP("ipv6", "6", false, "only IPv6 connections")
	events := fs.StringSliceP("events", "e", nil, "only these events (comma-separated): "+eventNames())
	duration := fs.StringP("duration", "d", "", "stop after this long (30s, 5m, or seconds); default: until Ctrl-C or SIGTERM")
	interval := fs.String("interval", "1s", "at most one line per connection per interval for repeated events")
	fs.StringVarP(&o.output, "output", "o", "text", "output format: text, json (one object per line) or none (with --metrics)")
	fs.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics on `ADDR`/metrics (:9464, 127.0.0.1:9464)")
	fs.IntVar(&o.maxSeries, "metrics-max-series", tracer.DefaultMaxSeries, "at most `N` series of events and durations; more are counted as refused")
	fs.StringVar(&o.webConfigFile, "web.config.file", "", "TLS and basic authentication for --metrics: a Prometheus web configuration `FILE`")
	fs.BoolVar(&o.listProbes, "list-probes", false, "print each event's probe path on this kernel, or why none works, and exit")
	fs.BoolVarP(&o.help, "help", "h", false, "show this help")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	force := fs.String("force-path", "", "use only this probe path: tracepoint, fentry or kprobe (for tests)")
	_ = fs.MarkHidden("force-path")

	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.help {
		fmt.Fprint(stdout, usageHead+fs.FlagUsages())
		return o, nil
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	// An empty list (-p '', -e '') would mean no filter at all: tracing
	// the whole host is not what someone who typed the flag asked for.
	if fs.Changed("pid") && len(*pids) == 0 {
		return nil, errors.New("--pid needs at least one pid")
	}
	for _, p := range *pids {
		n, err := strconv.ParseUint(strings.TrimSpace(p), 10, 32)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("invalid pid %q", p)
		}
		o.tracer.PIDs = append(o.tracer.PIDs, uint32(n))
	}
	if fs.Changed("port") {
		n, err := strconv.ParseUint(strings.TrimSpace(*port), 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("invalid --port %q: want a port number, 1-65535", *port)
		}
		o.tracer.Port = uint16(n)
	}
	switch {
	case *v4 && *v6:
		return nil, errors.New("-4 and -6 exclude each other")
	case *v4:
		o.tracer.Family = 4
	case *v6:
		o.tracer.Family = 6
	}
	if fs.Changed("events") && len(*events) == 0 {
		return nil, fmt.Errorf("--events needs at least one event (known: %s)", eventNames())
	}
	for _, name := range *events {
		t, err := tracer.ParseEventType(strings.TrimSpace(name))
		if err != nil {
			return nil, err
		}
		o.tracer.Events = append(o.tracer.Events, t)
	}
	var err error
	if *duration != "" {
		if o.duration, err = parseSeconds("--duration", *duration); err != nil {
			return nil, err
		}
	}
	if o.tracer.Interval, err = parseSeconds("--interval", *interval); err != nil {
		return nil, err
	}
	if o.output != "text" && o.output != "json" && o.output != "none" {
		return nil, fmt.Errorf("unknown output format %q (known: text, json, none)", o.output)
	}
	if o.maxSeries <= 0 {
		return nil, fmt.Errorf("--metrics-max-series must be positive, got %d", o.maxSeries)
	}
	if o.cgroup != "" && o.container != "" {
		return nil, errors.New("--cgroup and --container exclude each other")
	}
	if fs.Changed("container") && (len(o.container) < 4 || strings.Trim(o.container, "0123456789abcdef") != "") {
		return nil, fmt.Errorf("invalid --container %q: want a container id or a prefix of it, at least 4 hex digits", o.container)
	}
	if fs.Changed("cgroup") && !strings.HasPrefix(o.cgroup, "/") {
		return nil, fmt.Errorf("invalid --cgroup %q: want a path from the cgroup hierarchy's root, as in /proc/<pid>/cgroup", o.cgroup)
	}
	if o.webConfigFile != "" && o.metrics == "" {
		return nil, errors.New("--web.config.file needs --metrics")
	}
	if *force != "" {
		p, err := tracer.ParseProbePath(*force)
		if err != nil {
			return nil, err
		}
		o.tracer.ForcePath = p
	}
	return o, nil
}

func eventNames() string {
	var names []string
	for _, t := range tracer.AllEventTypes() {
		names = append(names, t.String())
	}
	return strings.Join(names, ", ")
}

// parseSeconds takes a Go duration ("1.5s", "2m") or a bare number of seconds.
func parseSeconds(flag, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		f, ferr := strconv.ParseFloat(v, 64)
		if ferr != nil {
			return 0, fmt.Errorf("invalid %s %q: want a duration such as 30s or a number of seconds", flag, v)
		}
		d = time.Duration(f * float64(time.Second))
	}
	if d <= 0 {
		return 0, fmt.Errorf("%s must be positive, got %q", flag, v)
	}
	return d, nil
}
