package e2e

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The node agent as the DaemonSet runs it: the image `make image` builds,
// under podman with exactly the DaemonSet's namespaces, capabilities,
// seccomp profile, read-only root, memory limit, mounts and arguments (read
// from deploy/kubernetes/daemonset.yaml, so the two cannot drift), in a
// network namespace of its own as a pod's. /readyz answers only once the
// probes are attached; the agent counts the syn_drops of a server in
// another container and of one on the host, each named as what it is.
// Without any one of the capabilities it was given, it names that one and
// exits 2.
func TestImageDaemonSet(t *testing.T) {
	requireEvents(t, "syn_drop")
	podman := requirePodman(t)
	ds := readDaemonSet(t)
	agent := buildAgentImage(t)
	pod := newNetns(t)
	args := podmanArgs(t, ds, pod.name, "")

	name := "tcptrace-e2e-agent-" + randomHex(t, 4)
	run := exec.Command(podman, append(append([]string{"--runtime", "runc", "run", "--rm", "--name", name}, args...), agent)...)
	run.Args = append(run.Args, ds.Spec.Template.Spec.Containers[0].Args...)
	var logs bytes.Buffer
	run.Stdout, run.Stderr = &logs, &logs
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	t.Cleanup(func() {
		exec.Command(podman, "rm", "-f", "-t", "0", name).Run()
		<-exited
	})
	port := metricsPort(t, ds)
	addr := "127.0.0.1:" + strconv.Itoa(port)

	// From the container's start: while the programs load, /healthz
	// answers and /readyz says "loading" (503); the first 200 of /readyz
	// comes with every event's probe attached, as the metrics then show.
	start := time.Now()
	loading, healthyWhileLoading := 0, false
	for {
		code, body, err := httpGetIn(pod.name, addr, "/readyz")
		if err == nil {
			if code == http.StatusOK {
				break
			}
			if code != http.StatusServiceUnavailable || !strings.Contains(body, "loading") {
				t.Fatalf("/readyz before ready: %d %q, want 503 loading\n%s", code, body, logs.String())
			}
			if loading++; loading == 1 {
				hc, hb, herr := httpGetIn(pod.name, addr, "/healthz")
				if herr != nil || hc != http.StatusOK {
					t.Errorf("/healthz while loading: %d %q %v", hc, hb, herr)
				}
				healthyWhileLoading = herr == nil && hc == http.StatusOK
				if mc, mb, merr := httpGetIn(pod.name, addr, "/metrics"); merr == nil && mc == http.StatusOK {
					t.Errorf("/metrics while loading: 200\n%s", mb)
				}
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("the agent exited (%v) before ready:\n%s", err, logs.String())
		default:
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("/readyz not ready in 60 s: %d %v\n%s", code, err, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("ready %v after the container started; /readyz answered 503 loading %d times before (/healthz 200 meanwhile: %v)",
		time.Since(start).Round(time.Millisecond), loading, healthyWhileLoading)
	_, exposition, err := httpGetIn(pod.name, addr, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^tcptrace_probe_info\{event="([a-z_]+)",path="none"\}`).FindAllStringSubmatch(exposition, -1); len(m) > 0 {
		t.Errorf("ready while some events have no probe: %v", m)
	}
	for _, e := range allEventNames(t) {
		if !strings.Contains(exposition, `tcptrace_probe_info{event="`+e+`",path=`) {
			t.Errorf("ready, but no tcptrace_probe_info for %s:\n%s", e, exposition)
		}
	}
	if code, _, err := httpGetIn(pod.name, addr, "/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("/healthz: %d %v", code, err)
	}

	// A server in another container, and one on the host (a process of no
	// container, in a namespace of its own), each flooded.
	image := importImage(t, podman)
	other := newNetns(t)
	srv := startContainerServer(t, podman, image, other, 6)
	ctrID, ctrPort := srv.id, srv.port
	// The kubelet's link to the container's log, as on a node whose runtime
	// speaks only CRI: the agent reads the pod's names from it.
	link := filepath.Join("/var/log/containers", "web-0_shop_nginx-"+ctrID+".log")
	if err := os.Symlink("/var/log/pods/shop_web-0_uid/nginx/0.log", link); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(link) })

	hostNS := newNetns(t)
	hostSrv := startHelper(t, hostNS, "server", 0, helperBacklogEnv+"=6")

	before := map[*netns]map[string]uint64{other: other.netstat(), hostNS: hostNS.netstat()}
	for ns, p := range map[*netns]int{other: ctrPort, hostNS: hostSrv.Port} {
		flood, fill := floodClients(t, ns, p, 6, 13, 2500*time.Millisecond)
		flood.send()
		fill.send()
	}
	time.Sleep(1500 * time.Millisecond) // the agent's interval: aggregated counts reach the metrics
	_, exposition, err = httpGetIn(pod.name, addr, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	series := metricSeries(exposition, "tcptrace_events_total")
	for _, c := range []struct {
		what      string
		ns        *netns
		container string // the container_id label wanted
		port      int
	}{
		{"the server in another container", other, ctrID, ctrPort},
		{"the server on the host", hostNS, "", hostSrv.Port},
	} {
		var got uint64
		for _, s := range series {
			if s.labels["event"] != "syn_drop" || s.labels["listen_port"] != strconv.Itoa(c.port) {
				continue
			}
			if s.labels["container_id"] != c.container || s.labels["comm"] != "e2e.test" {
				t.Errorf("%s: a series names container %q, process %q; want %q, e2e.test", c.what, s.labels["container_id"], s.labels["comm"], c.container)
			}
			if pod := s.labels["pod_namespace"] + "/" + s.labels["pod_name"] + "/" + s.labels["container_name"]; c.container != "" && pod != "shop/web-0/nginx" {
				t.Errorf("%s: a series names %q, want shop/web-0/nginx (the kubelet's log link)", c.what, pod)
			}
			got += uint64(s.value)
		}
		kernel := counterDelta(before[c.ns], c.ns.netstat(), "ListenOverflows")["ListenOverflows"]
		t.Logf("%s: %d syn_drop, ListenOverflows +%d", c.what, got, kernel)
		if got == 0 || got > kernel {
			t.Errorf("%s: %d syn_drop in the agent's metrics, its namespace's ListenOverflows +%d:\n%s", c.what, got, kernel, exposition)
		}
	}
	select {
	case err := <-exited:
		t.Fatalf("the agent exited: %v\n%s", err, logs.String())
	default:
	}

	// The host's PID namespace is needed: in one of its own, the agent says
	// so in one line and exits 2.
	if ds.Spec.Template.Spec.HostPID {
		t.Run("without the host's PID namespace", func(t *testing.T) {
			args := podmanArgs(t, ds, pod.name, "")
			i := slices.Index(args, "--pid")
			if i < 0 || args[i+1] != "host" {
				t.Fatalf("podmanArgs %q: no --pid host", args)
			}
			args = slices.Delete(args, i, i+2)
			// An agent that does not refuse runs until stopped.
			name := "tcptrace-e2e-nopid-" + randomHex(t, 4)
			t.Cleanup(func() { exec.Command(podman, "rm", "-f", "-t", "0", name).Run() })
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, podman, append(append([]string{"--runtime", "runc", "run", "--rm", "--name", name}, args...), agent)...)
			cmd.Args = append(cmd.Args, ds.Spec.Template.Spec.Containers[0].Args...)
			refusedInOneLine(t, cmd, "tcptrace: not in the host's PID namespace", "hostPID: true")
		})
	} else {
		t.Error("the DaemonSet does not ask for the host's PID namespace: the agent refuses to run without it")
	}

	// Each capability the DaemonSet adds is needed: without it, the agent
	// names it in one line and exits 2 (CAP_SYSLOG only where the kernel
	// hides addresses from a process without it).
	for _, c := range ds.Spec.Template.Spec.Containers[0].SecurityContext.Capabilities.Add {
		capName := "CAP_" + string(c)
		t.Run("without "+capName, func(t *testing.T) {
			if capName == "CAP_SYSLOG" && !kallsymsHiddenWithoutSyslog() {
				t.Skipf("kernel.perf_event_paranoid<=1 and kernel.kptr_restrict=0 show addresses to anyone: CAP_SYSLOG is not needed here")
			}
			if capName == "CAP_DAC_READ_SEARCH" {
				holdSocketAs(t, 65534)
			}
			args := podmanArgs(t, ds, pod.name, c)
			cmd := exec.Command(podman, append(append([]string{"--runtime", "runc", "run", "--rm"}, args...), agent)...)
			cmd.Args = append(cmd.Args, ds.Spec.Template.Spec.Containers[0].Args...)
			refusedInOneLine(t, cmd, "tcptrace: missing capability "+capName+": ")
		})
	}
}
