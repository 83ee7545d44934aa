package tracer

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics is the Prometheus sink: every line the other sinks get, counted
// by event, reason and who, and the durations people alert on as
// histograms; plus what tcptrace knows about itself. Labels name where a
// pathology is (the process's name, its container and pod, a listener's
// port), never a peer, a client's port or a pid: those belong in the lines,
// and as labels they would make a series per connection.
type Metrics struct {
	reg    *prometheus.Registry
	events *prometheus.CounterVec
	hists  map[EventType]*prometheus.HistogramVec
	byName map[string]*prometheus.HistogramVec // the same, by durationSpec name

	// series caps the label sets of events and histograms together:
	// a name chosen by every process of a busy host (or, later, every
	// container) must not grow the exposition without bound.
	mu        sync.Mutex
	maxSeries int
	series    map[seriesKey]time.Time // when each was last added to
	refused   prometheus.Counter
	// containers lists the containers on the host now (nil: none known);
	// Sweep drops the series of the others.
	containers func() map[string]bool
}

type seriesKey struct {
	metric string
	labels [9]string
}

// whoLabels name where a pathology is. Not "pod", "namespace" or
// "container": Prometheus's Kubernetes discovery gives a target such
// labels (tcptrace's own pod's), and the target's would win.
var whoLabels = []string{"event", "reason", "comm", "container_id", "container_name", "pod_uid", "pod_name", "pod_namespace"}

// DefaultMaxSeries is the series cap unless the command line sets one.
const DefaultMaxSeries = 10000

// durationBuckets span what the histograms see: a delayed ACK's tens of
// milliseconds up to a connect() that times out after minutes.
var durationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// NewMetrics makes the sink for a tracer t (its probe paths, lost events
// and skipped runs are read when Prometheus scrapes). version names the
// build in tcptrace_build_info.
func NewMetrics(t *Tracer, version string, maxSeries int) *Metrics {
	var self selfSource
	if t != nil { // (nil: the unit tests' sink, with no kernel side)
		self = t
	}
	return newMetrics(self, version, maxSeries)
}

func newMetrics(self selfSource, version string, maxSeries int) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcptrace_events_total",
			Help: "Occurrences of each TCP pathology tcptrace reported (the sum of its lines' counts, as in its summary); listen_port is the listener's port on listener events.",
		}, append(whoLabels, "listen_port")),
		hists:      map[EventType]*prometheus.HistogramVec{},
		byName:     map[string]*prometheus.HistogramVec{},
		maxSeries:  maxSeries,
		series:     map[seriesKey]time.Time{},
		containers: HostContainers,
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tcptrace_metrics_series_refused_total",
			Help: "Observations not recorded because they would have made a series beyond the cap (--metrics-max-series).",
		}),
	}
	m.reg.MustRegister(m.events, m.refused, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if self != nil {
		m.reg.MustRegister(&selfCollector{t: self, version: version})
	}
	for _, d := range detectors {
		for _, ds := range d.durations {
			h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
				Name:    "tcptrace_" + ds.name + "_seconds",
				Help:    ds.help,
				Buckets: durationBuckets,
			}, whoLabels)
			m.reg.MustRegister(h)
			m.byName[ds.name] = h
			for _, e := range ds.events {
				m.hists[e] = h
			}
		}
	}
	return m
}

// Registry is what the HTTP handler exposes.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Add counts one line. A send still blocked is counted when it returns, as
// the summary counts it.
func (m *Metrics) Add(e Event) {
	if e.inProgress {
		return
	}
	comm := printable(e.Comm)
	port := ""
	if listenDetector.has(e.Type) {
		port = strconv.Itoa(int(e.Local.Port()))
	}
	who := []string{e.Type.String(), string(e.Reason), comm, e.ContainerID, printable(e.Container), e.PodUID, printable(e.Pod), printable(e.PodNamespace)}
	if labels := append(who, port); m.admit("events", labels...) {
		m.events.WithLabelValues(labels...).Add(float64(e.Count))
	}
	h := m.hists[e.Type]
	if h == nil {
		return
	}
	det := detectorOf(e.Type)
	for _, ds := range det.durations {
		sum, ok := ds.sum(&e)
		if !ok || !containsEvent(ds.events, e.Type) || e.Count == 0 || !m.admit(ds.name, who...) {
			continue
		}
		// A line stands for Count occurrences and knows their sum: each
		// is counted at the mean, so _sum and _count are exact and the
		// buckets as close as the line allows.
		o := h.WithLabelValues(who...)
		mean := (sum / time.Duration(e.Count)).Seconds()
		for i := uint64(0); i < e.Count; i++ {
			o.Observe(mean)
		}
	}
}

// admit says whether a label set may be recorded: it is known, or the cap
// has room for it.
func (m *Metrics) admit(metric string, labels ...string) bool {
	k := seriesKey{metric: metric}
	copy(k.labels[:], labels)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.series[k]; !ok && len(m.series) >= m.maxSeries {
		m.refused.Inc()
		return false
	}
	m.series[k] = time.Now()
	return true
}

// GoneAfter is how long the series of a container that is gone are kept:
// a few scrapes see their last values, then they go and make room under the
// cap.
const GoneAfter = 5 * time.Minute

// Sweep drops the series of containers that are no longer on the host
// and have not moved for GoneAfter. Call it now and then (once a minute).
func (m *Metrics) Sweep(now time.Time) {
	present := m.containers()
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, last := range m.series {
		// labels: whoLabels[, listen_port]
		if k.labels[3] == "" || present[k.labels[3]] || now.Sub(last) < GoneAfter {
			continue
		}
		if k.metric == "events" {
			m.events.DeleteLabelValues(k.labels[:]...)
		} else if h := m.byName[k.metric]; h != nil {
			h.DeleteLabelValues(k.labels[:len(whoLabels)]...)
		}
		delete(m.series, k)
	}
}

// selfCollector reports tcptrace itself, read when Prometheus scrapes.
type selfCollector struct {
	t       selfSource
	version string
}

// selfSource is what selfCollector reads of a Tracer; the unit tests give
// it one without a kernel side, so that every metric can be linted.
type selfSource interface {
	Status() []ProbeStatus
	tracedEvents() []EventType
	lostNow() (map[EventType]uint64, error)
	skippedNow() map[string]uint64
	CounterChecksNow() []CounterCheck
}

var (
	descProbe = prometheus.NewDesc("tcptrace_probe_info",
		"The probe path each traced event uses on this kernel (none: no path works; tcptrace --list-probes says why).",
		[]string{"event", "path"}, nil)
	descLost = prometheus.NewDesc("tcptrace_lost_events_total",
		"Events the kernel side could not hand over (ring buffer or aggregation table full).",
		[]string{"event"}, nil)
	descSkipped = prometheus.NewDesc("tcptrace_skipped_runs_total",
		"Hits of a hook for which the kernel did not run tcptrace's program (recursion, a missed kprobe).",
		[]string{"program"}, nil)
	descBuild = prometheus.NewDesc("tcptrace_build_info",
		"tcptrace's version.", []string{"version"}, nil)
	descNotSeen = prometheus.NewDesc("tcptrace_kernel_counter_not_seen",
		"How many the kernel's counter counted since tcptrace started, in a network namespace, beyond the events tcptrace reported that it counts (the summary's check; 0: every one seen).",
		[]string{"counter", "events", "netns"}, nil)
)

func (c *selfCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descProbe, descLost, descSkipped, descBuild, descNotSeen} {
		ch <- d
	}
}

func (c *selfCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descBuild, prometheus.GaugeValue, 1, c.version)
	for _, st := range c.t.Status() {
		path := "none"
		if st.Path != 0 {
			path = st.Path.String()
		}
		for _, e := range st.Events {
			ch <- prometheus.MustNewConstMetric(descProbe, prometheus.GaugeValue, 1, e.String(), path)
		}
	}
	lost, err := c.t.lostNow()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descLost, err)
		return
	}
	for _, e := range c.t.tracedEvents() {
		ch <- prometheus.MustNewConstMetric(descLost, prometheus.CounterValue, float64(lost[e]), e.String())
	}
	for prog, n := range c.t.skippedNow() {
		ch <- prometheus.MustNewConstMetric(descSkipped, prometheus.CounterValue, float64(n), prog)
	}
	for _, cc := range c.t.CounterChecksNow() {
		ch <- prometheus.MustNewConstMetric(descNotSeen, prometheus.GaugeValue, float64(cc.notSeen()),
			cc.Counter, cc.What, strconv.FormatUint(uint64(cc.NetNS), 10))
	}
}
