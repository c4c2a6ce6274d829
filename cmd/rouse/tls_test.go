package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/harness/testpki"
)

// `rouse gateway --tls-dir` serves the folder's certificates by SNI, picks up a renewed
// certificate without a restart while an open keep-alive connection keeps working, and
// --redirect-listen sends plain HTTP to https with 308.
func TestGatewayTLSReload(t *testing.T) {
	bin, _ := bins(t)
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	first := ca.Issue(t, "*.default.localhost")
	first.Write(t, filepath.Join(dir, "wild.crt"), filepath.Join(dir, "wild.key"))
	ports, err := agents.FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	pub, redir, adm := fmt.Sprint("127.0.0.1:", ports[0]), fmt.Sprint("127.0.0.1:", ports[1]), fmt.Sprint("127.0.0.1:", ports[2])
	startGatewayCmd(t, bin, "--listen", pub, "--admin-listen", adm, "--redirect-listen", redir,
		"--tls-dir", dir, "--id", "tls", "--register=false", "--access-log=false")

	// served reports the serial of the certificate a new connection for name gets.
	served := func(name string) (string, error) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", pub, &tls.Config{RootCAs: ca.Pool, ServerName: name})
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	poll.Until(t, 30*time.Second, "the gateway serving TLS", func() error {
		s, err := served("hello.default.localhost")
		if err == nil && s != first.Serial.String() {
			return fmt.Errorf("certificate serial %s, want %s", s, first.Serial)
		}
		return err
	})

	// One kept-alive connection, open across the renewal.
	var reused []bool
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = append(reused, i.Reused) }}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, pub)
		},
		MaxConnsPerHost: 1,
	}}
	get := func() int {
		t.Helper()
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "https://nosuch.default.localhost/", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body) // read to the end, or the client drops the connection
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != http.StatusNotFound { // no such service: the gateway's own 404, over TLS
		t.Fatalf("https request for an unknown service: %d", code)
	}

	second := ca.Issue(t, "*.default.localhost")
	second.Write(t, filepath.Join(dir, "wild.crt"), filepath.Join(dir, "wild.key"))
	took := poll.Until(t, 10*time.Second, "the renewed certificate served", func() error {
		s, err := served("hello.default.localhost")
		if err == nil && s != second.Serial.String() {
			return fmt.Errorf("certificate serial %s, want %s", s, second.Serial)
		}
		return err
	})
	t.Logf("renewed certificate served %s after the files changed", took.Round(10*time.Millisecond))
	if code := get(); code != http.StatusNotFound || len(reused) != 2 || !reused[1] {
		t.Fatalf("after the renewal the open connection answered %d (connections reused: %v)", code, reused)
	}

	// Plain HTTP on the redirect listener.
	c, err := net.DialTimeout("tcp", redir, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /x?y HTTP/1.1\r\nHost: hello.default.localhost\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := "https://hello.default.localhost:" + strconv.Itoa(ports[0]) + "/x?y"; resp.StatusCode != 308 || resp.Header.Get("Location") != want {
		t.Fatalf("redirect listener: %d Location %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
}

// `rouse gateway --tls-consul-prefix` serves the pairs a fleet shares in Consul KV,
// picks up a renewed one put there without a restart, and offers HTTP/2 (ALPN h2) as
// well as HTTP/1.1.
func TestGatewayTLSFromConsulKV(t *testing.T) {
	bin, _ := bins(t)
	ca := testpki.NewCA(t)
	kv := cluster.Consul.KV()
	const prefix = "rouse-certs-test/"
	put := func(l testpki.Leaf) {
		t.Helper()
		// The key first: a reader between the two puts sees the old pair fail to match
		// and keeps serving the old set.
		for _, p := range []*consulapi.KVPair{{Key: prefix + "wild/tls.key", Value: l.KeyPEM}, {Key: prefix + "wild/tls.crt", Value: l.CertPEM}} {
			if _, err := kv.Put(p, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(func() { _, _ = kv.DeleteTree(prefix, nil) })
	first := ca.Issue(t, "*.default.localhost")
	put(first)
	ports, err := agents.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	pub, adm := fmt.Sprint("127.0.0.1:", ports[0]), fmt.Sprint("127.0.0.1:", ports[1])
	startGatewayCmd(t, bin, "--listen", pub, "--admin-listen", adm,
		"--tls-consul-prefix", prefix, "--id", "tls-kv", "--register=false", "--access-log=false")
	// served reports the serial of the certificate a new connection gets, and its ALPN.
	served := func() (string, string, error) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", pub,
			&tls.Config{RootCAs: ca.Pool, ServerName: "hello.default.localhost", NextProtos: []string{"h2", "http/1.1"}})
		if err != nil {
			return "", "", err
		}
		defer c.Close()
		st := c.ConnectionState()
		return st.PeerCertificates[0].SerialNumber.String(), st.NegotiatedProtocol, nil
	}
	poll.Until(t, 30*time.Second, "the gateway serving the certificate from Consul KV", func() error {
		s, alpn, err := served()
		if err == nil && (s != first.Serial.String() || alpn != "h2") {
			return fmt.Errorf("certificate serial %s ALPN %q, want %s and h2", s, alpn, first.Serial)
		}
		return err
	})
	second := ca.Issue(t, "*.default.localhost")
	put(second)
	took := poll.Until(t, 10*time.Second, "the renewed certificate served", func() error {
		s, _, err := served()
		if err == nil && s != second.Serial.String() {
			return fmt.Errorf("certificate serial %s, want %s", s, second.Serial)
		}
		return err
	})
	t.Logf("renewed certificate served %s after the put to Consul KV", took.Round(10*time.Millisecond))
}

// startGatewayCmd runs `rouse gateway args...` against the test cluster until the test
// ends (SIGTERM, then wait), and logs its output if the test failed.
func startGatewayCmd(t *testing.T, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"gateway"}, args...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, cluster.Env()...)
	var out strings.Builder
	cmd.Stderr, cmd.Stdout = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("rouse gateway output:\n%s", out.String())
		}
	})
}
