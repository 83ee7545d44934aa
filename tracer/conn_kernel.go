package tracer

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// connFacts is what the connection set-up and teardown detectors need to
// know about the running kernel beyond CO-RE: tracepoint prototypes that
// changed (each variant is its own program), the TIME_WAIT timer's address,
// and the names of drop and reset reasons, whose values differ by version.
type connFacts struct {
	rtxErrArg       bool // tcp:tcp_retransmit_skb passes err (6.17+)
	sendResetReason bool // tcp:tcp_send_reset passes enum sk_rst_reason (6.10+)
	kfreeRxSk       bool // skb:kfree_skb passes rx_sk (6.11+)
	pawsReasons     []string
	twTimerHandler  uint64 // tw_timer_handler in /proc/kallsyms
	twTimerErr      error
	dropReasons     map[uint32]string // enum skb_drop_reason, without SKB_DROP_REASON_
	rstReasons      map[uint32]string // enum sk_rst_reason, without SK_RST_REASON_
	err             error             // BTF unreadable
}

// The timestamp-check drop reasons, oldest first: TCP_RFC7323_PAWS came in
// 5.19, TCP_RFC7323_TW_PAWS in 6.16.
var pawsReasonNames = []string{"TCP_RFC7323_PAWS", "TCP_RFC7323_PAWS_ACK", "TCP_RFC7323_TSECR", "TCP_RFC7323_TW_PAWS"}

func readConnFacts(kernelBTF *btf.Cache) *connFacts {
	f := &connFacts{dropReasons: map[uint32]string{}, rstReasons: map[uint32]string{}}
	spec, err := kernelBTF.Kernel()
	if err != nil {
		f.err = fmt.Errorf("reading kernel BTF: %w", err)
		return f
	}
	// The typedef's prototype starts with the probe's data pointer.
	f.rtxErrArg = tracepointArgs(spec, "btf_trace_tcp_retransmit_skb") >= 4
	f.sendResetReason = tracepointArgs(spec, "btf_trace_tcp_send_reset") >= 4
	f.kfreeRxSk = tracepointArgs(spec, "btf_trace_kfree_skb") >= 5
	enumNames(spec, "skb_drop_reason", "SKB_DROP_REASON_", f.dropReasons)
	enumNames(spec, "sk_rst_reason", "SK_RST_REASON_", f.rstReasons)
	for _, n := range pawsReasonNames {
		for _, have := range f.dropReasons {
			if have == n {
				f.pawsReasons = append(f.pawsReasons, n)
			}
		}
	}
	f.twTimerHandler, f.twTimerErr = kallsymsAddr("tw_timer_handler")
	return f
}

func enumNames(spec *btf.Spec, enum, prefix string, out map[uint32]string) {
	var e *btf.Enum
	if spec.TypeByName(enum, &e) != nil {
		return
	}
	for _, v := range e.Values {
		out[uint32(v.Value)] = strings.TrimPrefix(v.Name, prefix)
	}
}

func (f *connFacts) hasPawsReason(name string) bool {
	for _, n := range f.pawsReasons {
		if n == name {
			return true
		}
	}
	return false
}

func setConnFacts(v *tcptraceVariableSpecs, f *connFacts) error {
	return set(setting{v.CfgTwTimerHandler, f.twTimerHandler})
}

func connFactsOf(k *kernelFacts) (*connFacts, error) {
	if k.conn == nil {
		return nil, errors.New("kernel facts for connection events not read")
	}
	if k.conn.err != nil {
		return nil, k.conn.err
	}
	return k.conn, nil
}

// needPrototype: a tracepoint whose arguments changed between versions has
// a program for each prototype, and each program's path requires its own.
// has tells whether this kernel's tracepoint is the newer one; want, whether
// the path is for it. The errors say why the path does not fit.
func needPrototype(want bool, has func(*connFacts) bool, noNewer, notOlder string) func(*kernelFacts) error {
	return func(k *kernelFacts) error {
		f, err := connFactsOf(k)
		if err != nil {
			return err
		}
		switch {
		case want && !has(f):
			return errors.New(noNewer)
		case !want && has(f):
			return errors.New(notOlder)
		}
		return nil
	}
}
