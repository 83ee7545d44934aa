package tracer

import "time"

// synSchedule is when a connecting socket retransmits its SYN and when
// connect() gives up, as the retransmit timer decides (net/ipv4/tcp_timer.c,
// tcp_retransmit_timer() and tcp_write_timeout()):
//
//   - The first SYN's timer is TCP_TIMEOUT_INIT, 1 s (a BPF sock_ops program
//     can change it; tcptrace assumes it did not).
//   - Each firing first asks tcp_write_timeout() whether to give up, with k
//     SYNs retransmitted so far: yes when k reaches the retry limit
//     (TCP_SYNCNT, else net.ipv4.tcp_syn_retries; from 6.5 plus
//     net.ipv4.tcp_syn_linear_timeouts), or when k > 0 and the time since
//     the first SYN reaches TCP_USER_TIMEOUT if set, else the time
//     tcp_model_timeout() gives for retries doublings of 1 s.
//   - Otherwise the SYN is retransmitted and the RTO doubles (up to 120 s,
//     or TCP_RTO_MAX_MS from 6.15), except for the first
//     tcp_syn_linear_timeouts retransmits (6.5+), which keep it.
//   - With TCP_USER_TIMEOUT the timer never runs past it.
type synModel struct {
	retries     int           // effective retry limit: TCP_SYNCNT or tcp_syn_retries
	linear      int           // tcp_syn_linear_timeouts; 0 on kernels without it
	userTimeout time.Duration // 0: none
	rtoMax      time.Duration
}

const (
	tcpTimeoutInit = time.Second
	tcpRTOMax      = 120 * time.Second
)

// modelTimeout is tcp_model_timeout(boundary, TCP_TIMEOUT_INIT): the time of
// `boundary` exponential doublings from 1 s, capped per step at TCP_RTO_MAX.
func modelTimeout(boundary int, rtoMax time.Duration) time.Duration {
	return modelTimeoutFrom(boundary, tcpTimeoutInit, rtoMax)
}

// modelTimeoutFrom is tcp_model_timeout(): `boundary` doublings of base,
// each step capped at rtoMax. A synchronized connection's is from
// TCP_RTO_MIN (200 ms) with net.ipv4.tcp_retries2 doublings.
func modelTimeoutFrom(boundary int, base, rtoMax time.Duration) time.Duration {
	thresh := 0 // ilog2(rto_max / rto_base)
	for r := rtoMax / base; r > 1; r >>= 1 {
		thresh++
	}
	if boundary <= thresh {
		return time.Duration((2<<boundary)-1) * base
	}
	return time.Duration((2<<thresh)-1)*base + time.Duration(boundary-thresh)*rtoMax
}

// schedule returns when each SYN retransmit goes out and when connect()
// gives up, both measured from the first SYN.
func (m synModel) schedule() (retransmits []time.Duration, giveUp time.Duration) {
	rtoMax := m.rtoMax
	if rtoMax <= 0 {
		rtoMax = tcpRTOMax
	}
	maxRetrans := m.retries + m.linear
	timeout := m.userTimeout
	if timeout == 0 {
		timeout = modelTimeout(m.retries, rtoMax)
	}
	var t time.Duration
	rto := tcpTimeoutInit
	for k := 0; k < 1000; k++ {
		next := rto
		if m.userTimeout > 0 {
			next = min(rto, max(m.userTimeout-t, 0))
		}
		t += next
		if k >= maxRetrans || (k > 0 && t >= timeout) {
			return retransmits, t
		}
		retransmits = append(retransmits, t)
		if k+1 > m.linear {
			rto = min(rto*2, rtoMax)
		}
	}
	return retransmits, t
}
