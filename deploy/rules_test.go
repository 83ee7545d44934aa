// Package deploy holds what runs tcptrace as a fleet's agent: the image's
// Containerfile (image/), alert rules for Prometheus (prometheus/) and the
// Kubernetes manifests (kubernetes/). Its tests check them with the tools
// and types their users' systems use: promtool, the Kubernetes API types.
package deploy

import (
	"os/exec"
	"testing"
)

// The alert rules load (promtool check rules) and each fires on the series
// it is for, with the summary the test file spells out, and not on the
// series beside it (promtool test rules). promtool comes with Debian's
// prometheus package (make deps-test installs it).
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is not installed (make deps-test installs Debian's prometheus): %v", err)
	}
	for _, args := range [][]string{
		{"check", "rules", "prometheus/tcptrace.rules.yml"},
		{"test", "rules", "prometheus/tcptrace.rules.test.yml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}
