// Package deploy holds what runs tcptrace as a fleet's agent: the image's
// Containerfile (image/), alert rules for Prometheus (prometheus/) and the
// Kubernetes manifests (kubernetes/). Its tests check them with the tools
// and types their users' systems use: promtool, the Kubernetes API types.
package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"unicode"

	"sigs.k8s.io/yaml"
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

// alertRules are the alerts of the rules file, by name, and their
// runbook_url.
func alertRules(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("prometheus/tcptrace.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `json:"alert"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(b, &file); err != nil {
		t.Fatal(err)
	}
	alerts := map[string]string{}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				alerts[r.Alert] = r.Annotations["runbook_url"]
			}
		}
	}
	if len(alerts) == 0 {
		t.Fatal("no alerts in prometheus/tcptrace.rules.yml")
	}
	return alerts
}

// Every alert has a promtool test case where it fires and one where it must
// not: an alert without the second could fire on everything, one without
// the first on nothing.
func TestAlertRulesEachTestedBothWays(t *testing.T) {
	b, err := os.ReadFile("prometheus/tcptrace.rules.test.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string            `json:"alertname"`
				ExpAlerts *[]map[string]any `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(b, &file); err != nil {
		t.Fatal(err)
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range file.Tests {
		for _, a := range tc.AlertRuleTest {
			if a.ExpAlerts != nil && len(*a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				silent[a.Alertname] = true
			}
		}
	}
	for name := range alertRules(t) {
		if !fires[name] {
			t.Errorf("%s: no test case where it fires", name)
		}
		if !silent[name] {
			t.Errorf("%s: no test case where it must not fire", name)
		}
	}
}

// runbookBase is where every alert's runbook_url points: a section of the
// README, which explains the event, the numbers to read and what to change.
const runbookBase = "https://github.com/tcptrace/tcptrace/blob/main/README.md#"

// Every alert's runbook_url is a section of the README that exists.
func TestAlertRunbooksExist(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := headingAnchors(string(readme))
	for name, url := range alertRules(t) {
		anchor, ok := strings.CutPrefix(url, runbookBase)
		if !ok {
			t.Errorf("%s: runbook_url %q is not a section of %s", name, url, strings.TrimSuffix(runbookBase, "#"))
			continue
		}
		if !anchors[anchor] {
			t.Errorf("%s: runbook_url %q: README.md has no heading with the anchor %q", name, url, anchor)
		}
	}
}

// headingAnchors are the anchors GitHub gives a Markdown document's
// headings (outside code blocks).
func headingAnchors(md string) map[string]bool {
	anchors := map[string]bool{}
	seen := map[string]int{}
	fence := false
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "```") {
			fence = !fence
			continue
		}
		if fence {
			continue
		}
		h := strings.TrimLeft(line, "#")
		if len(h) == len(line) || len(line)-len(h) > 6 || !strings.HasPrefix(h, " ") {
			continue
		}
		slug := githubSlug(h)
		if n := seen[slug]; n > 0 {
			seen[slug]++
			slug = fmt.Sprintf("%s-%d", slug, n)
		} else {
			seen[slug] = 1
		}
		anchors[slug] = true
	}
	return anchors
}

// githubSlug is GitHub's anchor for a heading's text: lower case, letters,
// digits, '-' and '_' kept, spaces made '-', everything else dropped.
func githubSlug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

func TestGithubSlug(t *testing.T) {
	for h, want := range map[string]string{
		" TCPAcceptQueueOverflow":                      "tcpacceptqueueoverflow",
		" Counts against the kernel's":                 "counts-against-the-kernels",
		" JSON (`-o json`)":                            "json--o-json",
		" rto_stall: the path is back, the data waits": "rto_stall-the-path-is-back-the-data-waits",
	} {
		if got := githubSlug(h); got != want {
			t.Errorf("githubSlug(%q) = %q, want %q", h, got, want)
		}
	}
}
