package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// readDaemonSet reads deploy/kubernetes/daemonset.yaml.
func readDaemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	b, err := os.ReadFile("../deploy/kubernetes/daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.Unmarshal(b, &ds); err != nil {
		t.Fatal(err)
	}
	if len(ds.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("want one container in the DaemonSet, got %d", len(ds.Spec.Template.Spec.Containers))
	}
	return &ds
}

// buildAgentImage runs `make image` with a tag of this test's own.
func buildAgentImage(t *testing.T) string {
	t.Helper()
	repo, version := "localhost/tcptrace-e2e-agent", "e2e-"+randomHex(t, 4)
	cmd := exec.Command("make", "-C", "..", "image", "IMAGE="+repo, "VERSION="+version)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("podman", "rmi", "-f", repo+":"+version, repo+":latest").Run() })
	return repo + ":" + version
}

// podmanArgs turns the DaemonSet's pod into podman's flags: the pod's own
// network namespace is netnsName; without, when set, is a capability left
// out. A field this does not know fails the test: the manifest cannot ask
// for something the test does not give.
func podmanArgs(t *testing.T, ds *appsv1.DaemonSet, netnsName string, without corev1.Capability) []string {
	t.Helper()
	spec := ds.Spec.Template.Spec
	c := spec.Containers[0]
	args := []string{"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network", "ns:/run/netns/" + netnsName}
	// The pod's fields and the container's that this knows: each is given
	// to podman below, or says nothing podman could give (scheduling, the
	// service account token tcptrace does not read, the probes, tested
	// themselves). Any other (a pod securityContext, sysctls, the host's
	// network, env, a command) fails the test until taught here.
	unknownFields(t, "the pod's spec", spec, "containers", "hostPID", "automountServiceAccountToken", "priorityClassName", "tolerations", "volumes")
	unknownFields(t, "the container", c, "name", "image", "args", "ports", "securityContext", "resources", "livenessProbe", "readinessProbe", "volumeMounts")
	if spec.HostNetwork || spec.HostIPC {
		t.Fatal("the DaemonSet asks for the host's network or IPC namespace: teach podmanArgs")
	}
	if spec.HostPID {
		args = append(args, "--pid", "host")
	}
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("the DaemonSet's container has no securityContext.capabilities")
	}
	unknownFields(t, "the container's securityContext", sc, "runAsUser", "runAsGroup", "readOnlyRootFilesystem", "seccompProfile", "capabilities")
	if sc.RunAsUser != nil {
		g := int64(0)
		if sc.RunAsGroup != nil {
			g = *sc.RunAsGroup
		}
		args = append(args, "--user", fmt.Sprintf("%d:%d", *sc.RunAsUser, g))
	}
	if sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
		args = append(args, "--read-only")
	}
	switch p := sc.SeccompProfile; {
	case p == nil || p.Type == corev1.SeccompProfileTypeRuntimeDefault:
		// podman's default profile
	case p.Type == corev1.SeccompProfileTypeUnconfined:
		args = append(args, "--security-opt", "seccomp=unconfined")
	default:
		t.Fatalf("seccompProfile %s: teach podmanArgs", p.Type)
	}
	for _, d := range sc.Capabilities.Drop {
		args = append(args, "--cap-drop", strings.ToLower(string(d)))
	}
	for _, a := range sc.Capabilities.Add {
		if a != without {
			args = append(args, "--cap-add", "CAP_"+string(a))
		}
	}
	if m := c.Resources.Limits.Memory(); !m.IsZero() {
		args = append(args, "--memory", strconv.FormatInt(m.Value(), 10))
	}
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	for _, vm := range c.VolumeMounts {
		v, ok := vols[vm.Name]
		if !ok || v.HostPath == nil {
			t.Fatalf("volume %s: only hostPath volumes are known to podmanArgs", vm.Name)
		}
		if v.HostPath.Type != nil && *v.HostPath.Type == corev1.HostPathDirectoryOrCreate {
			os.MkdirAll(v.HostPath.Path, 0o755)
		}
		// The kubelet bind-mounts a hostPath recursively (the node's
		// /sys/fs/cgroup is a tmpfs of mounts).
		opts := []string{"rbind"}
		if vm.ReadOnly {
			opts = append(opts, "ro")
		}
		if vm.MountPropagation != nil && *vm.MountPropagation == corev1.MountPropagationHostToContainer {
			opts = append(opts, "rslave")
		}
		args = append(args, "-v", v.HostPath.Path+":"+vm.MountPath+":"+strings.Join(opts, ","))
	}
	return args
}

// unknownFields fails the test when v, as the manifest spells it, sets a
// field not in known.
func unknownFields(t *testing.T, what string, v any, known ...string) {
	t.Helper()
	raw, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := yaml.Unmarshal(raw, &fields); err != nil {
		t.Fatal(err)
	}
	for f := range fields {
		if !slices.Contains(known, f) {
			t.Fatalf("%s sets %s: teach podmanArgs what it means", what, f)
		}
	}
}

func metricsPort(t *testing.T, ds *appsv1.DaemonSet) int {
	t.Helper()
	for _, p := range ds.Spec.Template.Spec.Containers[0].Ports {
		if p.Name == "metrics" {
			return int(p.ContainerPort)
		}
	}
	t.Fatal("the DaemonSet has no port named metrics")
	return 0
}
