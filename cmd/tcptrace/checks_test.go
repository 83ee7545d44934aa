package main

import (
	"strings"
	"testing"

	"github.com/tcptrace/tcptrace/tracer"
)

// A container or cgroup that is not there is the user's error, named.
func TestResolveCgroupsErrors(t *testing.T) {
	if tracer.CgroupRoot() == "" {
		t.Skip("no cgroup v2 hierarchy mounted on this machine: nothing to resolve against")
	}
	for _, c := range []struct {
		o    options
		want string
	}{
		{options{cgroup: "/no/such/cgroup/here"}, "--cgroup /no/such/cgroup/here: no such cgroup below "},
		{options{container: "ffffffffffff0000"}, `--container: no container "ffffffffffff0000" on this host`},
	} {
		err := resolveCgroups(&c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.o, err, c.want)
		}
	}
	o := options{cgroup: tracer.CgroupRoot()}
	if err := resolveCgroups(&o); err != nil || len(o.tracer.Cgroups) != 1 || o.tracer.Cgroups[0] != "/" {
		t.Errorf("the root by its mount point: %v %v", o.tracer.Cgroups, err)
	}
}
