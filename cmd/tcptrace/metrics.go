package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/tcptrace/tcptrace/tracer"
)

// metricsListener binds --metrics's address before anything is attached,
// so that an address that is malformed or taken is the user's error (exit
// 2) and leaves nothing behind. The web configuration file is checked then
// too.
func metricsListener(o *options) (net.Listener, error) {
	if o.metrics == "" {
		return nil, nil
	}
	if o.webConfigFile != "" {
		if err := web.Validate(o.webConfigFile); err != nil {
			return nil, fmt.Errorf("--web.config.file %s: %w", o.webConfigFile, err)
		}
	}
	l, err := net.Listen("tcp", o.metrics)
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", o.metrics, err)
	}
	return l, nil
}

// metricsServer serves /metrics, /healthz and /readyz on l until stopped.
// exporter-toolkit adds TLS and basic authentication from the web
// configuration file, as every Prometheus exporter does.
type metricsServer struct {
	srv     *http.Server
	done    chan error
	once    sync.Once
	stopErr error
	// loaded: the metrics and the probes' status once tracer.New has
	// attached what it could; nil while the programs load.
	loaded atomic.Pointer[loadedState]
}

type loadedState struct {
	metrics http.Handler
	status  []tracer.ProbeStatus
}

// serveMetrics starts serving at once, before anything is loaded: loading
// and attaching the programs takes seconds, and an orchestrator's liveness
// probe must not find the port closed meanwhile. Until ready is called,
// /healthz answers, /readyz and /metrics say "loading" with 503.
func serveMetrics(l net.Listener, webConfigFile string, stderr io.Writer) *metricsServer {
	s := &metricsServer{done: make(chan error, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		st := s.loaded.Load()
		if st == nil {
			loading(w)
			return
		}
		st.metrics.ServeHTTP(w, r)
	})
	// Health for an orchestrator's probes: alive while the server answers;
	// ready when every selected event's detector is attached.
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		st := s.loaded.Load()
		if st == nil {
			loading(w)
			return
		}
		var missing []string
		for _, p := range st.status {
			if p.Path == 0 {
				missing = append(missing, p.Names())
			}
		}
		if len(missing) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not attached on this kernel: %s (tcptrace --list-probes says why)\n", strings.Join(missing, ", "))
			return
		}
		io.WriteString(w, "ok\n")
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: log.New(stderr, "tcptrace: metrics: ", 0)}
	// The toolkit logs every start at Info; only what goes wrong is
	// worth a line beside the events.
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	go func() {
		s.done <- web.Serve(l, s.srv, &web.FlagConfig{WebConfigFile: &webConfigFile}, logger)
	}()
	return s
}

func loading(w http.ResponseWriter) {
	w.WriteHeader(http.StatusServiceUnavailable)
	io.WriteString(w, "loading: the probes are not attached yet\n")
}

// ready serves m's metrics and judges readiness by status from now on.
func (s *metricsServer) ready(m *tracer.Metrics, status []tracer.ProbeStatus, stderr io.Writer) {
	s.loaded.Store(&loadedState{
		metrics: promhttp.HandlerFor(m.Registry(), promhttp.HandlerOpts{
			ErrorLog:      slog.NewLogLogger(slog.NewTextHandler(stderr, nil), slog.LevelError),
			ErrorHandling: promhttp.ContinueOnError,
		}),
		status: status,
	})
}

// sweepMetrics drops, once a minute, the series of containers that are
// gone (tracer.Metrics.Sweep), until ctx is done.
func sweepMetrics(ctx context.Context, m *tracer.Metrics) {
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			m.Sweep(now)
		}
	}
}

// stop ends the server, waiting briefly for a scrape in progress; later
// calls return the first one's result.
func (s *metricsServer) stop() error {
	if s == nil {
		return nil
	}
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.stopErr = s.srv.Shutdown(ctx)
		if err := <-s.done; err != nil && !errors.Is(err, http.ErrServerClosed) && s.stopErr == nil {
			s.stopErr = err
		}
	})
	return s.stopErr
}
