package e2e

import (
	"fmt"
	"os"
	"testing"
)

// benchMarkdownEnv names the file make bench collects its report in
// (bench.md): each benchmark appends its section as Markdown, ready for
// docs/cost.md.
const benchMarkdownEnv = "TCPTRACE_BENCH_MD"

// benchReport logs a benchmark's result and appends it to the report.
func benchReport(b *testing.B, title, markdown string) {
	b.Helper()
	b.Logf("%s (%s):\n%s", title, kernelRelease(), markdown)
	path := os.Getenv(benchMarkdownEnv)
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		b.Fatalf("bench report: %v", err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "### %s\n\n%s\n\n", title, markdown); err != nil {
		b.Fatalf("bench report: %v", err)
	}
}
