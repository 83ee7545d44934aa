package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/tracer"
	"golang.org/x/crypto/bcrypt"
)

// A bad --metrics address or web configuration is the user's error, found
// before anything is attached.
func TestMetricsListenerErrors(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	bad := filepath.Join(t.TempDir(), "web.yml")
	os.WriteFile(bad, []byte("tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n"), 0o600)
	for _, c := range []struct {
		o    options
		want string
	}{
		{options{metrics: "bogus"}, "--metrics bogus: listen tcp: address bogus: missing port in address"},
		{options{metrics: "127.0.0.1:99999"}, "invalid port"},
		{options{metrics: taken.Addr().String()}, "address already in use"},
		{options{metrics: "127.0.0.1:0", webConfigFile: bad}, "--web.config.file " + bad},
		{options{metrics: "127.0.0.1:0", webConfigFile: "/nonexistent.yml"}, "--web.config.file /nonexistent.yml"},
	} {
		l, err := metricsListener(&c.o)
		if err == nil {
			l.Close()
			t.Errorf("%+v: no error", c.o)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%+v: %q, want one line containing %q", c.o, err, c.want)
		}
	}
	if l, err := metricsListener(&options{}); l != nil || err != nil {
		t.Errorf("no --metrics: %v %v", l, err)
	}
}

// With a web configuration file the endpoint speaks only TLS and asks for
// the user and password it names (a bcrypt hash, as Prometheus's own).
func TestMetricsTLSAndBasicAuth(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := selfSigned(t)
	os.WriteFile(filepath.Join(dir, "tls.crt"), certPEM, 0o600)
	os.WriteFile(filepath.Join(dir, "tls.key"), keyPEM, 0o600)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	web := filepath.Join(dir, "web.yml")
	os.WriteFile(web, []byte("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\nbasic_auth_users:\n  prom: "+string(hash)+"\n"), 0o600)

	o := &options{metrics: "127.0.0.1:0", webConfigFile: web}
	l, err := metricsListener(o)
	if err != nil {
		t.Fatal(err)
	}
	m := tracer.NewMetrics(nil, "test", tracer.DefaultMaxSeries)
	s := serveMetrics(l, web, io.Discard)
	s.ready(m, nil, io.Discard)
	defer s.stop()
	url := "https://" + l.Addr().String() + "/metrics"
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	get := func(user, pass string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("", ""); code != http.StatusUnauthorized {
		t.Errorf("no credentials: %d, want 401", code)
	}
	if code, _ := get("prom", "wrong"); code != http.StatusUnauthorized {
		t.Errorf("wrong password: %d, want 401", code)
	}
	if code, body := get("prom", "s3cret"); code != http.StatusOK || !strings.Contains(body, "tcptrace_metrics_series_refused_total") {
		t.Errorf("right password: %d\n%s", code, body)
	}
	// Plain HTTP gets no metrics.
	plain := &http.Client{Timeout: 5 * time.Second}
	if resp, err := plain.Get("http://" + l.Addr().String() + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP answered 200")
		}
	}
	if err := s.stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
}

func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tcptrace test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// /healthz answers from the start, while the programs load; /readyz says
// "loading" until then, and afterwards is ready only when every selected
// event's detector is attached, naming those that are not. /metrics is
// served once loaded.
func TestHealthEndpoints(t *testing.T) {
	for _, c := range []struct {
		status   []tracer.ProbeStatus
		code     int
		contains string
	}{
		{[]tracer.ProbeStatus{{Events: []tracer.EventType{tracer.SynDrop}, Path: tracer.PathTracepoint}}, http.StatusOK, "ok"},
		{[]tracer.ProbeStatus{{Events: []tracer.EventType{tracer.SynDrop}, Path: tracer.PathTracepoint},
			{Events: []tracer.EventType{tracer.SendEAGAIN}}}, http.StatusServiceUnavailable, "not attached on this kernel: send_eagain"},
	} {
		l, err := metricsListener(&options{metrics: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		s := serveMetrics(l, "", io.Discard)
		get := func(path string) (int, string) {
			resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + l.Addr().String() + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		// Loading: alive, not ready, no metrics yet.
		if code, _ := get("/healthz"); code != http.StatusOK {
			t.Errorf("/healthz while loading: %d", code)
		}
		for _, path := range []string{"/readyz", "/metrics"} {
			if code, body := get(path); code != http.StatusServiceUnavailable || !strings.Contains(body, "loading") {
				t.Errorf("%s while loading: %d %q, want 503 loading", path, code, body)
			}
		}
		s.ready(tracer.NewMetrics(nil, "test", tracer.DefaultMaxSeries), c.status, io.Discard)
		if code, _ := get("/healthz"); code != http.StatusOK {
			t.Errorf("/healthz: %d", code)
		}
		if code, body := get("/readyz"); code != c.code || !strings.Contains(body, c.contains) {
			t.Errorf("/readyz with %+v: %d %q, want %d %q", c.status, code, body, c.code, c.contains)
		}
		if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, "tcptrace_metrics_series_refused_total") {
			t.Errorf("/metrics once loaded: %d %q", code, body)
		}
		s.stop()
	}
}
