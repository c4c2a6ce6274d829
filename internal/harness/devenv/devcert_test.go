package devenv

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"
)

// The dev certificate verifies for its names against the CA file it wrote, and for
// nothing else.
func TestWriteDevCert(t *testing.T) {
	now := time.Now()
	dc, err := WriteDevCert(t.TempDir(), []string{"*.default.localhost", "localhost"}, now)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(dc.CertFile, dc.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(dc.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.crt holds no certificate")
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for name, ok := range map[string]bool{"hello.default.localhost": true, "localhost": true, "a.b.default.localhost": false, "example.com": false} {
		_, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool, CurrentTime: now})
		if (err == nil) != ok {
			t.Errorf("%s: verify error %v, want ok=%v", name, err, ok)
		}
	}
	if st, _ := os.Stat(dc.KeyFile); st.Mode().Perm() != 0o600 {
		t.Errorf("tls.key mode %v, want 0600", st.Mode().Perm())
	}
}
