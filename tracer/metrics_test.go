package tracer

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func listenerLine(reason Reason, comm string, port uint16, count uint64) Event {
	return Event{Type: SynDrop, Reason: reason, Comm: comm, Count: count,
		Local: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port), Remote: netip.MustParseAddrPort("10.0.0.2:40000"),
		tally: tally{count: count}}
}

// The counter adds each line's count, as the summary does, labelled by
// event, reason, process name and, on listener events only, the
// listener's port; a send still blocked is left for its end.
func TestMetricsCountsLines(t *testing.T) {
	m := NewMetrics(nil, "test", DefaultMaxSeries)
	m.Add(listenerLine(reasonAcceptQueueFull, "nginx", 443, 1))
	m.Add(listenerLine(reasonAcceptQueueFull, "nginx", 443, 12))
	m.Add(listenerLine(reasonSynQueueFull, "nginx", 443, 5))
	m.Add(Event{Type: SendEAGAIN, Reason: reasonPeerZeroWindow, Comm: "redis-server", Count: 7,
		Local: netip.MustParseAddrPort("10.0.0.1:6379"), Remote: netip.MustParseAddrPort("10.0.0.3:50000")})
	m.Add(Event{Type: SendBlocked, Reason: reasonPeerZeroWindow, Comm: "redis-server", Count: 1, inProgress: true})
	inPod := listenerLine(reasonAcceptQueueFull, "nginx", 443, 2)
	inPod.ContainerID, inPod.PodUID = "3f1d", "7e2b1f04-8c3d"
	m.Add(inPod)
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"syn_drop", "accept_queue_full", "nginx", "", "", "", "", "", "443"}, 13},
		{[]string{"syn_drop", "syn_queue_full", "nginx", "", "", "", "", "", "443"}, 5},
		{[]string{"send_eagain", "peer_zero_window", "redis-server", "", "", "", "", "", ""}, 7},
		{[]string{"syn_drop", "accept_queue_full", "nginx", "3f1d", "", "7e2b1f04-8c3d", "", "", "443"}, 2},
	} {
		if got := testutil.ToFloat64(m.events.WithLabelValues(c.labels...)); got != c.want {
			t.Errorf("%v: %v, want %v", c.labels, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.events); n != 4 {
		t.Errorf("%d series, want 4 (the blocked send still in progress is not counted)", n)
	}
}

// A line of n delayed ACKs with their summed hold counts n observations at
// the mean: the histogram's count and sum are exact.
func TestMetricsDurations(t *testing.T) {
	m := NewMetrics(nil, "test", DefaultMaxSeries)
	e := Event{Type: DelayedACK, Reason: reasonPingpong, Comm: "client", Count: 4,
		tally: tally{count: 4, wait: 160 * time.Millisecond}, delack: delackState{heldKnown: true}}
	m.Add(e)
	unknown := e
	unknown.delack.heldKnown = false // armed before tcptrace started
	m.Add(unknown)
	want := `
# HELP tcptrace_delayed_ack_hold_seconds How long the receiver's delayed-ACK timer held an ACK, from its arming to its firing.
# TYPE tcptrace_delayed_ack_hold_seconds histogram
tcptrace_delayed_ack_hold_seconds_bucket{comm="client",container_id="",container_name="",event="delayed_ack",pod_name="",pod_namespace="",pod_uid="",reason="pingpong",le="0.001"} 0
tcptrace_delayed_ack_hold_seconds_bucket{comm="client",container_id="",container_name="",event="delayed_ack",pod_name="",pod_namespace="",pod_uid="",reason="pingpong",le="0.0025"} 0
tcptrace_delayed_ack_hold_seconds_bucket{comm="client",container_id="",container_name="",event="delayed_ack",pod_name="",pod_namespace="",pod_uid="",reason="pingpong",le="0.005"} 0
tcptrace_delayed_ack_hold_seconds_bucket{comm="client",container_id="",container_name="",event="delayed_ack",pod_name="",pod_namespace="",pod_uid="",reason="pingpong",le="0.01"} 0
tcptrace_delayed_ack_hold_seconds_bucket{comm="client",container_id="",container_name="",event="delayed_ack",pod_name="",pod_namespace="",pod_uid="",reason="pingpong",le="0.025"} 0
tcptrace_delayed_ack_hold_seconds_bucket{comm="client",container_id="",container_name="",event="delayed_ack",pod_name="",pod_namespace="",pod_uid="",reason="pingpong",le="0.05"} 4
tcptrace_delayed_ack_hold_seconds_bucket{comm="client",container_id="",container_name="",event="delayed_ack",pod_name="",pod_namespace="",pod_uid="",reason="pingpong",le="0.1"} 4
tcptrace_delayed_ack_hold_seconds_bucket{comm="client",container_id="",container_name="",event="delayed_ack",pod_name="",pod_namespace="",pod_uid="",reason="pingpong",le="0.25"} 4
tcptrace_delayed_ack_hold_seconds_bucket{comm="client",container_id="",container_name="",event="delayed_ack",pod_name="",pod_namespace="",pod_uid="",reason="pingpong",le="0.5"} 4
tcptrace_delayed_ack_hold_seconds_bucket{comm="client",container_id="",container_name="",event="delayed_ack",pod_name="",pod_namespace="",pod_uid="",reason="pingpong",le="1"} 4
tcptrace_delayed_ack_hold_seconds_bucket{comm="client",container_id="",container_name="",event="delayed_ack",pod_name="",pod_namespace="",pod_uid="",reason="pingpong",le="2.5"} 4
tcptrace_delayed_ack_hold_seconds_bucket{comm="client",container_id="",container_name="",event="delayed_ack",pod_name="",pod_namespace="",pod_uid="",reason="pingpong",le="5"} 4
tcptrace_delayed_ack_hold_seconds_bucket{comm="client",container_id="",container_name="",event="delayed_ack",pod_name="",pod_namespace="",pod_uid="",reason="pingpong",le="10"} 4
tcptrace_delayed_ack_hold_seconds_bucket{comm="client",container_id="",container_name="",event="delayed_ack",pod_name="",pod_namespace="",pod_uid="",reason="pingpong",le="30"} 4
tcptrace_delayed_ack_hold_seconds_bucket{comm="client",container_id="",container_name="",event="delayed_ack",pod_name="",pod_namespace="",pod_uid="",reason="pingpong",le="60"} 4
tcptrace_delayed_ack_hold_seconds_bucket{comm="client",container_id="",container_name="",event="delayed_ack",pod_name="",pod_namespace="",pod_uid="",reason="pingpong",le="120"} 4
tcptrace_delayed_ack_hold_seconds_bucket{comm="client",container_id="",container_name="",event="delayed_ack",pod_name="",pod_namespace="",pod_uid="",reason="pingpong",le="300"} 4
tcptrace_delayed_ack_hold_seconds_bucket{comm="client",container_id="",container_name="",event="delayed_ack",pod_name="",pod_namespace="",pod_uid="",reason="pingpong",le="+Inf"} 4
tcptrace_delayed_ack_hold_seconds_sum{comm="client",container_id="",container_name="",event="delayed_ack",pod_name="",pod_namespace="",pod_uid="",reason="pingpong"} 0.16
tcptrace_delayed_ack_hold_seconds_count{comm="client",container_id="",container_name="",event="delayed_ack",pod_name="",pod_namespace="",pod_uid="",reason="pingpong"} 4
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "tcptrace_delayed_ack_hold_seconds"); err != nil {
		t.Error(err)
	}
	if got := testutil.ToFloat64(m.events.WithLabelValues("delayed_ack", "pingpong", "client", "", "", "", "", "", "")); got != 8 {
		t.Errorf("delayed_ack counted %v, want 8 (a hold not known still counts as an event)", got)
	}
}

// Past the cap a new label set is refused and counted; known ones go on.
func TestMetricsSeriesCap(t *testing.T) {
	m := NewMetrics(nil, "test", 2)
	for _, comm := range []string{"a", "b", "c", "a"} {
		m.Add(listenerLine(reasonAcceptQueueFull, comm, 80, 1))
	}
	if n := testutil.CollectAndCount(m.events); n != 2 {
		t.Errorf("%d series, want the cap's 2", n)
	}
	if got := testutil.ToFloat64(m.refused); got != 1 {
		t.Errorf("refused %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.events.WithLabelValues("syn_drop", "accept_queue_full", "a", "", "", "", "", "", "80")); got != 2 {
		t.Errorf("a known series after the cap: %v, want 2", got)
	}
}

// A process may name itself with bytes that are not UTF-8, which a label
// value may not hold: the name is escaped as in the text output.
func TestMetricsCommEscaped(t *testing.T) {
	m := NewMetrics(nil, "test", DefaultMaxSeries)
	m.Add(listenerLine(reasonAcceptQueueFull, "bad\xffname", 80, 1))
	if got := testutil.ToFloat64(m.events.WithLabelValues("syn_drop", "accept_queue_full", `bad\xffname`, "", "", "", "", "", "80")); got != 1 {
		t.Errorf("escaped name not found (%v)", got)
	}
}

// fakeSelf stands for a Tracer's kernel side: every metric about tcptrace
// itself has something to show.
type fakeSelf struct{}

func (fakeSelf) Status() []ProbeStatus {
	return []ProbeStatus{{Events: []EventType{SynDrop, SynCookie}, Path: PathTracepoint},
		{Events: []EventType{DelayedACK}}} // no path works
}
func (fakeSelf) tracedEvents() []EventType { return AllEventTypes() }
func (fakeSelf) lostNow() (map[EventType]uint64, error) {
	return map[EventType]uint64{SynDrop: 3}, nil
}
func (fakeSelf) skippedNow() map[string]uint64 { return map[string]uint64{"tcp_retransmit": 2} }
func (fakeSelf) CounterChecksNow() []CounterCheck {
	return []CounterCheck{{What: "syn_drop[accept_queue_full]+listen_overflow", Counter: "ListenOverflows",
		NetNS: 4026531840, Kernel: 10, Seen: 9}}
}

// describedNames are the names of the metrics c describes.
func describedNames(c prometheus.Collector) []string {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	var names []string
	for d := range ch {
		// A Desc shows its name only in its String: Desc{fqName: "x", ...}.
		_, rest, _ := strings.Cut(d.String(), `fqName: "`)
		name, _, _ := strings.Cut(rest, `"`)
		names = append(names, name)
	}
	return names
}

// Names, help texts, units and types as Prometheus's conventions want them,
// for every metric tcptrace can expose: each is made to show a series
// first, since the linter sees only what is gathered.
func TestMetricsLint(t *testing.T) {
	m := newMetrics(fakeSelf{}, "test", DefaultMaxSeries)
	m.Add(listenerLine(reasonAcceptQueueFull, "nginx", 443, 1))
	for _, d := range detectors {
		for _, ds := range d.durations {
			e := Event{Type: ds.events[0], Comm: "x", Count: 1, tally: tally{count: 1, wait: time.Millisecond},
				delack: delackState{heldKnown: true}, conn: connState{StartKnown: true, Elapsed: time.Second},
				Reason: reasonRecovered, retransmit: retransmitState{stall: rtoStall{StallKnown: true, Stall: time.Second}}}
			m.Add(e)
		}
	}
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	gathered := map[string]bool{}
	for _, f := range families {
		gathered[f.GetName()] = true
	}
	var all []string
	for _, c := range []prometheus.Collector{m.events, m.refused, &selfCollector{t: fakeSelf{}}} {
		all = append(all, describedNames(c)...)
	}
	for name := range m.byName {
		all = append(all, describedNames(m.byName[name])...)
	}
	if len(all) < 11 {
		t.Errorf("%d metrics described (%v): the names were not read", len(all), all)
	}
	for _, name := range all {
		if !gathered[name] {
			t.Errorf("%s not gathered, so not linted", name)
		}
	}
}

// The series of a container that is gone go after GoneAfter without a
// change; those of containers still there, or of no container, stay.
func TestMetricsSweepGoneContainers(t *testing.T) {
	m := NewMetrics(nil, "test", DefaultMaxSeries)
	present := map[string]bool{"aaaa": true}
	m.containers = func() map[string]bool { return present }
	for _, c := range []string{"aaaa", "bbbb", ""} {
		e := Event{Type: DelayedACK, Reason: reasonPingpong, Comm: "x", Count: 1, ContainerID: c,
			tally: tally{count: 1, wait: 40 * time.Millisecond}, delack: delackState{heldKnown: true}}
		m.Add(e)
	}
	series := func() int {
		n, _ := testutil.GatherAndCount(m.Registry(), "tcptrace_events_total", "tcptrace_delayed_ack_hold_seconds")
		return n
	}
	if n := series(); n != 6 {
		t.Fatalf("%d series, want 6", n)
	}
	m.Sweep(time.Now().Add(GoneAfter / 2))
	if n := series(); n != 6 {
		t.Errorf("swept before GoneAfter: %d series", n)
	}
	m.Sweep(time.Now().Add(GoneAfter + time.Second))
	if n := series(); n != 4 {
		t.Errorf("%d series after the sweep, want 4 (bbbb's two gone)", n)
	}
	if got := testutil.ToFloat64(m.events.WithLabelValues("delayed_ack", "pingpong", "x", "aaaa", "", "", "", "", "")); got != 1 {
		t.Errorf("a present container's count: %v", got)
	}
	// Room under the cap again.
	m.mu.Lock()
	n := len(m.series)
	m.mu.Unlock()
	if n != 4 {
		t.Errorf("%d series kept under the cap, want 4", n)
	}
}
