package e2e

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// More sockets than tcptrace's socket-owner table had before it kept owners
// in the sockets themselves (65,536 records): each connection is two.
const scaleConns = 40000

func init() {
	connHelpers["manyserver"] = manyServer
	connHelpers["manyclient"] = manyClient
}

// Socket owners on a host with more sockets than a table sized at start
// would hold: tcptrace runs first, so every owner is recorded when its
// socket is made (connect(), accept), none by the start-up iterator. Four
// client processes open scaleConns connections in all to four server
// processes (a process may hold 20,000 files here), then the first client
// aborts its oldest connection (SO_LINGER 0, close()). The reset it sends
// must name that client, the one the server receives (softirq, on loopback
// in the client's own task) the server; --pid of the client must keep its
// reset and leave the server's out. Where the kernel keeps no owner in the
// sockets (before 5.11), tcptrace says so at start, and an owner it lost
// must show in the summary's count of events without one.
//
// A timer event too: before the others, the first client starts a connect()
// whose SYNs are dropped, and its SYN retransmits (the socket's timer, in
// softirq) after all the connections are made must name that client,
// --pid included. The kprobe path has no socket storage (kprobes get the
// socket as a bare address) and keeps the table's limit.
func TestOwnersManySockets(t *testing.T) {
	requireEvents(t, "reset", "syn_retransmit")
	needMemory(t, scaleConns)
	ns := newNetns(t)
	ns.sysctl("net.core.somaxconn", "4096")
	const hangPort = 9
	ns.dropToPort(hangPort)
	rtxChosen, _, _ := strings.Cut(probeHooks(t, "syn_retransmit"), "\n")
	const pairs = 4
	count := fmt.Sprintf("TCPTRACE_E2E_COUNT=%d", scaleConns/pairs)
	var servers, clients []*helperProc
	for i := 0; i < pairs; i++ {
		s := startHelper(t, ns, "manyserver", 0, count)
		env := []string{count, fmt.Sprintf("TCPTRACE_E2E_ABORT=%t", i == 0), fmt.Sprintf("TCPTRACE_E2E_PORT=%d", s.Port)}
		if i == 0 {
			env = append(env, fmt.Sprintf("TCPTRACE_E2E_HANGPORT=%d", hangPort))
		}
		servers = append(servers, s)
		clients = append(clients, startHelper(t, ns, "manyclient", 0, env...))
	}
	server, client := servers[0], clients[0]
	slabBefore := kernelMemory(t)
	args := []string{"-e", "reset,syn_retransmit", "--interval", "500ms"}
	tr := startTracer(t, args...)
	byPID := startTracer(t, append(args, "--pid", strconv.Itoa(client.PID))...)

	start := time.Now()
	// The first client's oldest connection is made before the others'.
	fmt.Fprintln(client.stdin, "GO")
	hangLocal, _ := strconv.Atoi(client.line("FIRST")["hang_port"])
	for _, c := range clients[1:] {
		fmt.Fprintln(c.stdin, "GO")
	}
	for _, c := range clients[1:] {
		c.line("RESULT")
	}
	fmt.Fprintln(client.stdin, "ABORT")
	res := client.line("RESULT")
	t.Logf("kernel memory (Slab + Percpu) for the connections: %d MiB", (kernelMemory(t)-slabBefore)>>20)
	t.Logf("%d connections in %v; aborting client: %v", scaleConns, time.Since(start).Round(time.Millisecond), res)
	oldest, _ := strconv.Atoi(res["oldest_port"])
	// The server reads the reset's error from the accepted socket, so the
	// reset has been received (and traced) when it answers.
	fmt.Fprintf(server.stdin, "GO %d\n", oldest)
	srv := server.line("RESULT")
	// A SYN retransmit after every connection is made (1, 3, 7, 15... s
	// after the connect() began).
	rtx := func() int {
		fmt.Fprintln(client.stdin, "RTX")
		n, _ := strconv.Atoi(client.line("RTX")["n"])
		return n
	}
	made := rtx()
	for deadline := time.Now().Add(70 * time.Second); rtx() == made; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the hanging connect() retransmitted no SYN in 70 s after %d", made)
		}
	}
	stopAll(t, tr, byPID)
	if srv["errno"] != strconv.Itoa(int(unix.ECONNRESET)) {
		t.Fatalf("the server's oldest connection ended with errno %s, want ECONNRESET (%d)", srv["errno"], unix.ECONNRESET)
	}

	ino := ns.inode()
	var sent, received []event
	for _, e := range tr.eventsFor("reset", 0) {
		if e.NetNS != ino {
			continue
		}
		switch {
		case e.Reason == "sent" && e.LPort == oldest && e.RPort == server.Port:
			sent = append(sent, e)
		case e.Reason == "received" && e.LPort == server.Port && e.RPort == oldest:
			received = append(received, e)
		default:
			t.Errorf("unexpected reset: %s", dump([]event{e}))
		}
	}
	comm := commOf(t, client.PID)
	if len(sent) != 1 || sent[0].PID != client.PID || sent[0].Comm != comm || sent[0].Details["owner_known"] != true {
		t.Errorf("want one reset sent by the client (pid %d, %s) with owner_known true, got:\n%s%v\nstderr:\n%s",
			client.PID, comm, dump(sent), details(sent), tr.stderrText())
	}
	table := strings.Contains(tr.stderrText(), "does not let tracing programs use socket storage")
	switch {
	case len(received) != 1:
		t.Errorf("want one reset received by the server, got:\n%s", dump(received))
	case received[0].PID == server.PID && received[0].Details["owner_known"] == true:
	case table && received[0].Details["owner_known"] == false && ownersUnknown(tr.stderrText()) >= 1:
		// Before 5.11: a full table refuses sockets, and says so.
		t.Logf("owner of the server's socket unknown (full table of owners), counted in the summary:\n%s", tr.stderrText())
	default:
		t.Errorf("reset received by the server (pid %d): %s%v\nstderr:\n%s", server.PID, dump(received), details(received), tr.stderrText())
	}

	checkHangingConnect(t, tr, byPID, client.PID, ino, hangLocal, hangPort, table || strings.Contains(rtxChosen, "kprobe"))

	var pidSent []event
	for _, e := range byPID.eventsFor("reset", 0) {
		if e.NetNS != ino {
			continue
		}
		if e.PID != client.PID || e.Reason != "sent" || e.LPort != oldest {
			t.Errorf("--pid %d printed another process's or another reset: %s", client.PID, dump([]event{e}))
			continue
		}
		pidSent = append(pidSent, e)
	}
	if sumCounts(pidSent) != 1 {
		t.Errorf("--pid %d printed %d resets sent from port %d, want 1; stderr:\n%s", client.PID, sumCounts(pidSent), oldest, byPID.stderrText())
	}
}

// checkHangingConnect: every syn_retransmit of the client's hanging
// connect() names the client, and --pid of the client prints as many. With
// owners in a table only (tableOnly), an owner it forgot must be counted in
// the summary instead.
func checkHangingConnect(t *testing.T, tr, byPID *tracerRun, pid int, ino uint32, lport, rport int, tableOnly bool) {
	t.Helper()
	var all []event
	for _, e := range inNetns(tr.eventsFor("syn_retransmit", 0), ino) {
		if e.LPort == lport && e.RPort == rport {
			all = append(all, e)
		}
	}
	if len(all) == 0 {
		t.Fatalf("no syn_retransmit for the hanging connect() from port %d; stderr:\n%s", lport, tr.stderrText())
	}
	var forgotten uint64
	for _, e := range all {
		switch {
		case e.PID == pid && e.Details["owner_known"] == true:
		case tableOnly && e.Details["owner_known"] == false:
			forgotten += e.Count
		default:
			t.Errorf("syn_retransmit of the hanging connect(): want pid %d, owner known: %s%v", pid, dump([]event{e}), details([]event{e}))
		}
	}
	if forgotten > 0 {
		if n := ownersUnknown(tr.stderrText()); n < forgotten {
			t.Errorf("%d SYN retransmits without an owner, the summary counts %d:\n%s", forgotten, n, tr.stderrText())
		}
		t.Logf("table of owners: %d SYN retransmits of the hanging connect() without an owner, counted in the summary", forgotten)
		return
	}
	var mine uint64
	for _, e := range inNetns(byPID.eventsFor("syn_retransmit", 0), ino) {
		if e.LPort == lport && e.RPort == rport {
			mine += e.Count
		}
	}
	if want := sumCounts(all); mine != want {
		t.Errorf("--pid %d printed %d SYN retransmits of its hanging connect(), the unfiltered tracer %d; stderr:\n%s", pid, mine, want, byPID.stderrText())
	}
}

// needMemory skips, in the VM matrix only, when the machine has too little
// memory for n loopback connections: a connection's two sockets with their
// files and inodes take about 8.5 KiB of kernel memory (Slab and Percpu in
// /proc/meminfo: 326 MiB for 40,000 on 6.18; the test logs it).
func needMemory(t *testing.T, n int) {
	const perConn = 8704
	need := uint64(n) * perConn
	avail := memAvailable(t)
	if avail > 2*need || !inMatrix() {
		return
	}
	t.Skipf("%d connections need about %d MiB of kernel memory (twice that free to run alongside the tracer); %d MiB available", n, need>>20, avail>>20)
}

func memAvailable(t *testing.T) uint64 { return meminfo(t, "MemAvailable") }

func kernelMemory(t *testing.T) uint64 { return meminfo(t, "Slab") + meminfo(t, "Percpu") }

// meminfo is one /proc/meminfo line, in bytes.
func meminfo(t *testing.T, key string) uint64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		var kb uint64
		if _, err := fmt.Sscanf(line, key+": %d kB", &kb); err == nil {
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/meminfo", key)
	return 0
}

func commOf(t *testing.T, pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func details(evs []event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %v\n", e.Details)
	}
	return b.String()
}

// ownersUnknown is the summary's count of events without a known owner.
func ownersUnknown(stderr string) uint64 {
	for _, line := range strings.Split(stderr, "\n") {
		var n uint64
		if _, err := fmt.Sscanf(strings.TrimSpace(line), "owner unknown: %d events", &n); err == nil {
			return n
		}
	}
	return 0
}

// raiseNofile lets a helper hold n sockets: the hard limit is raised if
// needed (CAP_SYS_RESOURCE; some containers refuse it, hence four pairs of
// processes rather than one).
func raiseNofile(n int) error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if need := uint64(n) + 64; need > lim.Max {
		lim.Max = need
	}
	lim.Cur = lim.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("%d sockets: raising the open files limit to %d: %w", n, lim.Max, err)
	}
	return nil
}

func helperCount() int {
	n, _ := strconv.Atoi(os.Getenv("TCPTRACE_E2E_COUNT"))
	return n
}

// manyServer listens on 127.0.0.1 and accepts $TCPTRACE_E2E_COUNT
// connections, holding them all. On "GO <port>" it reads the connection
// from that client port, which the client aborted, and prints the errno.
func manyServer(time.Duration) error {
	n := helperCount()
	if err := raiseNofile(n); err != nil {
		return err
	}
	ln, err := listenTCP4(loopback, 0, 4096)
	if err != nil {
		return err
	}
	port, _ := localPort(ln)
	fmt.Printf("READY pid=%d port=%d\n", os.Getpid(), port)
	byPort := map[int]int{} // the client's port -> accepted socket
	for len(byPort) < n {
		fd, sa, err := unix.Accept(ln)
		if err != nil {
			return fmt.Errorf("accept #%d: %w", len(byPort)+1, err)
		}
		byPort[sa.(*unix.SockaddrInet4).Port] = fd
	}
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	var aborted int
	if _, perr := fmt.Sscanf(line, "GO %d", &aborted); err != nil || perr != nil {
		return fmt.Errorf("waiting for GO <port>: %q %v", line, err)
	}
	fd, ok := byPort[aborted]
	if !ok {
		return fmt.Errorf("no connection from port %d", aborted)
	}
	// Loopback hands the reset to the receive softirq, which usually runs
	// before the client's close() returns but is deferred to ksoftirqd on a
	// loaded machine (6.1 under emulation: EAGAIN once). Wait for it, then
	// read its error without blocking.
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 10000)
	unix.SetNonblock(fd, true)
	var b [16]byte
	_, err = unix.Read(fd, b[:])
	fmt.Printf("RESULT errno=%d\n", errnoOf(err))
	time.Sleep(time.Hour)
	return nil
}

// manyClient waits for GO, connects $TCPTRACE_E2E_COUNT times to
// 127.0.0.1:$TCPTRACE_E2E_PORT (the first alone, then from several
// goroutines) and prints RESULT with the first connection's port. With
// $TCPTRACE_E2E_ABORT true it says FIRST after the first connection and,
// before RESULT, waits for ABORT and aborts that connection (SO_LINGER 0,
// close()).
func manyClient(time.Duration) error {
	n := helperCount()
	port, _ := strconv.Atoi(os.Getenv("TCPTRACE_E2E_PORT"))
	abort := os.Getenv("TCPTRACE_E2E_ABORT") == "true"
	if err := raiseNofile(n); err != nil {
		return err
	}
	fmt.Printf("READY pid=%d\n", os.Getpid())
	in := bufio.NewReader(os.Stdin)
	if line, err := in.ReadString('\n'); err != nil || strings.TrimSpace(line) != "GO" {
		return fmt.Errorf("waiting for GO: %q %v", line, err)
	}
	dial := func() (int, error) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			return -1, err
		}
		if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: loopback, Port: port}); err != nil {
			unix.Close(fd)
			return -1, err
		}
		return fd, nil
	}
	// A connect() to a port whose SYNs are dropped, left retransmitting.
	hang, hangLocal := -1, 0
	var err error
	if hp, _ := strconv.Atoi(os.Getenv("TCPTRACE_E2E_HANGPORT")); hp != 0 {
		if hang, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0); err != nil {
			return err
		}
		if err := unix.Connect(hang, &unix.SockaddrInet4{Addr: loopback, Port: hp}); err != unix.EINPROGRESS {
			return fmt.Errorf("connect to the dropped port %d: %v", hp, err)
		}
		hangLocal, _ = localPort(hang)
	}
	first, err := dial()
	if err != nil {
		return err
	}
	oldest, _ := localPort(first)
	if abort {
		fmt.Printf("FIRST hang_port=%d\n", hangLocal)
	}
	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			for i := k; i < n-1; i += workers {
				if _, err := dial(); err != nil {
					errs <- fmt.Errorf("connection %d: %w", i+2, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	if abort {
		if line, err := in.ReadString('\n'); err != nil || strings.TrimSpace(line) != "ABORT" {
			return fmt.Errorf("waiting for ABORT: %q %v", line, err)
		}
		if err := unix.SetsockoptLinger(first, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
			return err
		}
		if err := unix.Close(first); err != nil {
			return err
		}
	}
	fmt.Printf("RESULT oldest_port=%d conns=%d\n", oldest, n)
	// Hold the connections until the test has its events; RTX: the
	// hanging connect()'s SYN retransmits so far.
	for {
		line, err := in.ReadString('\n')
		if err != nil {
			time.Sleep(time.Hour)
		}
		if strings.TrimSpace(line) == "RTX" && hang >= 0 {
			info, err := unix.GetsockoptTCPInfo(hang, unix.IPPROTO_TCP, unix.TCP_INFO)
			if err != nil {
				return err
			}
			fmt.Printf("RTX n=%d\n", info.Total_retrans)
		}
	}
}
