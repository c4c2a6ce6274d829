package certs

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rouse-run/rouse/internal/clock"
	"github.com/rouse-run/rouse/internal/harness/poll"
)

const day = 24 * time.Hour

// testCA issues the tests' certificates; each leaf's common name is its id, which the
// tests read back to tell which certificate was served (the package itself ignores CN).
type testCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	pool   *x509.CertPool
	serial int64
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "rouse test CA"},
		NotBefore:             time.Now().Add(-365 * day),
		NotAfter:              time.Now().Add(365 * day),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool, serial: 1}
}

// pemPair is a leaf and its key, PEM-encoded as they are written to files.
type pemPair struct{ cert, key []byte }

// leafSpec describes a leaf: its id (CN), validity and SANs; ips are IP SANs.
type leafSpec struct {
	id                  string
	notBefore, notAfter time.Time
	names               []string
	ips                 []net.IP
	rsa                 bool // an RSA 2048 key instead of ECDSA P-256
}

func (ca *testCA) issue(t *testing.T, l leafSpec) pemPair {
	t.Helper()
	var pub crypto.PublicKey
	var priv crypto.Signer
	if l.rsa {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		pub, priv = &k.PublicKey, k
	} else {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		pub, priv = &k.PublicKey, k
	}
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		Subject:      pkix.Name{CommonName: l.id},
		NotBefore:    l.notBefore,
		NotAfter:     l.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     l.names,
		IPAddresses:  l.ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return pemPair{
		cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
}

// valid issues a leaf valid from a day before now to 30 days after.
func (ca *testCA) valid(t *testing.T, now time.Time, id string, names ...string) pemPair {
	t.Helper()
	return ca.issue(t, leafSpec{id: id, notBefore: now.Add(-day), notAfter: now.Add(30 * day), names: names})
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// writePair writes p as <base>.crt and <base>.key and returns them as a Pair.
func writePair(t *testing.T, base string, p pemPair) Pair {
	t.Helper()
	write(t, base+".crt", p.cert)
	write(t, base+".key", p.key)
	return Pair{base + ".crt", base + ".key"}
}

// served is the id of the certificate s gives a handshake for sni.
func served(t *testing.T, s *Store, sni string) string {
	t.Helper()
	c, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: sni})
	if err != nil || c == nil || c.Leaf == nil {
		t.Fatalf("GetCertificate(%q) = %v, %v", sni, c, err)
	}
	return c.Leaf.Subject.CommonName
}

func TestSelectBySNI(t *testing.T) {
	now := time.Now()
	ca, dir := newCA(t), t.TempDir()
	s, err := New(Options{
		Files: []Pair{
			writePair(t, filepath.Join(dir, "default"), ca.valid(t, now, "default", "default.local")),
			writePair(t, filepath.Join(dir, "exact"), ca.valid(t, now, "exact", "a.default.example.com")),
			writePair(t, filepath.Join(dir, "wild"), ca.valid(t, now, "wild", "*.default.example.com")),
			writePair(t, filepath.Join(dir, "wild2"), ca.valid(t, now, "wild2", "*.Example.COM.")),
		},
		Clock: clock.NewFake(now),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ sni, want string }{
		{"a.default.example.com", "exact"},
		{"A.DEFAULT.Example.com.", "exact"},       // case and a trailing dot do not matter
		{"b.default.example.com", "wild"},         // one label under the wildcard
		{"B.Default.EXAMPLE.com.", "wild"},        //
		{"x.b.default.example.com", "default"},    // two labels: no wildcard covers it
		{"default.example.com", "wild2"},          // zero labels under *.default…, one under *.example.com
		{"example.com", "default"},                // a wildcard never matches its own parent
		{".default.example.com", "default"},       // an empty label is no label
		{"default.local", "default"},              //
		{"unknown.org", "default"},                // no match: the first of Files
		{"", "default"},                           // no SNI (a client dialling an IP)
		{"a.default.example.com.evil", "default"}, //
	} {
		if got := served(t, s, c.sni); got != c.want {
			t.Errorf("SNI %q: served %q, want %q", c.sni, got, c.want)
		}
	}
	want := []string{"*.default.example.com", "*.example.com", "a.default.example.com", "default.local"}
	if got := s.Names(); !slices.Equal(got, want) {
		t.Errorf("Names() = %q, want %q", got, want)
	}
	if c, _ := s.GetCertificate(nil); c.Leaf.Subject.CommonName != "default" {
		t.Errorf("a nil hello got %q", c.Leaf.Subject.CommonName)
	}
}

func TestPreferValidThenExactThenLatest(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	fake := clock.NewFake(now)
	ca, dir := newCA(t), t.TempDir()
	span := func(id string, from, to time.Duration, names ...string) Pair {
		return writePair(t, filepath.Join(dir, id), ca.issue(t, leafSpec{id: id, notBefore: now.Add(from), notAfter: now.Add(to), names: names}))
	}
	s, err := New(Options{
		Files: []Pair{
			span("default", -day, 1000*day, "default.local"),
			span("expired", -60*day, -day, "api.example.com"),
			span("soon", -day, day, "api.example.com"),
			span("later", -day, 10*day, "api.example.com"),
			span("future", 5*day, 40*day, "api.example.com"), // the latest NotAfter, not valid yet
			span("wild", -day, 100*day, "*.example.com"),
			span("old", -60*day, -day, "old.example.com"),
		},
		Clock: fake,
	})
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string, sni, want string) {
		t.Helper()
		if got := served(t, s, sni); got != want {
			t.Errorf("%s, SNI %s: served %q, want %q", when, sni, got, want)
		}
	}
	check("now", "api.example.com", "later")    // valid, and the latest of the valid exact ones
	check("now", "old.example.com", "wild")     // an expired exact one gives way to a valid wildcard
	check("now", "other.example.com", "wild")   //
	fake.Step(6 * day)                          // the renewal becomes valid and outlives "later"
	check("+6d", "api.example.com", "future")   //
	fake.Step(39 * day)                         // every exact one has expired; the wildcard has not
	check("+45d", "api.example.com", "wild")    //
	fake.Step(100 * day)                        // all expired: exact first, then the latest NotAfter
	check("+145d", "api.example.com", "future") //
}

func TestLoadErrors(t *testing.T) {
	now := time.Now()
	ca := newCA(t)
	good, other := ca.valid(t, now, "good", "good.example.com"), ca.valid(t, now, "other", "other.example.com")
	block, _ := pem.Decode(good.cert)
	corrupt := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes[:len(block.Bytes)/2]})

	for _, c := range []struct {
		name  string
		setup func(dir string) Options // files under dir
		want  []string                 // substrings of the error; "<dir>" is replaced by dir
	}{
		{"no files and no dir", func(string) Options { return Options{} },
			[]string{"no certificate"}},
		{"a pair without its key file name", func(dir string) Options {
			return Options{Files: []Pair{{CertFile: filepath.Join(dir, "a.crt")}}}
		}, []string{"Files[0]", "a.crt", "needs both"}},
		{"missing certificate file", func(dir string) Options {
			write(t, filepath.Join(dir, "a.key"), good.key)
			return Options{Files: []Pair{{filepath.Join(dir, "a.crt"), filepath.Join(dir, "a.key")}}}
		}, []string{"<dir>/a.crt", "no such file"}},
		{"missing key file", func(dir string) Options {
			write(t, filepath.Join(dir, "a.crt"), good.cert)
			return Options{Files: []Pair{{filepath.Join(dir, "a.crt"), filepath.Join(dir, "a.key")}}}
		}, []string{"<dir>/a.key", "no such file"}},
		{"key of another certificate", func(dir string) Options {
			write(t, filepath.Join(dir, "a.crt"), good.cert)
			write(t, filepath.Join(dir, "a.key"), other.key)
			return Options{Dir: dir}
		}, []string{"key <dir>/a.key for certificate <dir>/a.crt", "private key does not match public key"}},
		{"garbage certificate", func(dir string) Options {
			write(t, filepath.Join(dir, "a.crt"), []byte("not a certificate\n"))
			write(t, filepath.Join(dir, "a.key"), good.key)
			return Options{Dir: dir}
		}, []string{"<dir>/a.crt", "no CERTIFICATE PEM block"}},
		{"the key in the certificate file", func(dir string) Options {
			write(t, filepath.Join(dir, "a.crt"), good.key)
			write(t, filepath.Join(dir, "a.key"), good.key)
			return Options{Dir: dir}
		}, []string{"<dir>/a.crt", "no CERTIFICATE PEM block, only PRIVATE KEY"}},
		{"garbage key", func(dir string) Options {
			write(t, filepath.Join(dir, "a.crt"), good.cert)
			write(t, filepath.Join(dir, "a.key"), []byte("-----BEGIN PRIV"))
			return Options{Dir: dir}
		}, []string{"key <dir>/a.key", "failed to find any PEM data in key input"}},
		{"a certificate file cut short", func(dir string) Options {
			write(t, filepath.Join(dir, "a.crt"), good.cert[:len(good.cert)/2])
			write(t, filepath.Join(dir, "a.key"), good.key)
			return Options{Dir: dir}
		}, []string{"<dir>/a.crt", "cut short"}},
		{"an intermediate cut short", func(dir string) Options {
			write(t, filepath.Join(dir, "a.crt"), append(slices.Clone(good.cert), other.cert[:len(other.cert)/2]...))
			write(t, filepath.Join(dir, "a.key"), good.key)
			return Options{Dir: dir}
		}, []string{"<dir>/a.crt", "cut short"}},
		{"a block that is not DER", func(dir string) Options {
			write(t, filepath.Join(dir, "a.crt"), append(slices.Clone(good.cert), corrupt...))
			write(t, filepath.Join(dir, "a.key"), good.key)
			return Options{Dir: dir}
		}, []string{"<dir>/a.crt", "certificate 2"}},
		{"empty directory", func(dir string) Options {
			write(t, filepath.Join(dir, "README"), []byte("certificates go here\n"))
			write(t, filepath.Join(dir, "a.pem"), good.cert) // not the convention
			return Options{Dir: dir}
		}, []string{"no certificate", "<dir> has no"}},
		{"missing directory", func(dir string) Options {
			return Options{Dir: filepath.Join(dir, "nope")}
		}, []string{"<dir>/nope", "no such file"}},
		{"half a flat pair beside a good one", func(dir string) Options {
			writePair(t, filepath.Join(dir, "good"), good)
			write(t, filepath.Join(dir, "b.crt"), other.cert)
			return Options{Dir: dir}
		}, []string{"<dir>/b.crt has no key: want <dir>/b.key"}},
		{"a lone key", func(dir string) Options {
			writePair(t, filepath.Join(dir, "good"), good)
			write(t, filepath.Join(dir, "b.key"), other.key)
			return Options{Dir: dir}
		}, []string{"<dir>/b.key has no certificate"}},
		{"half a subdirectory pair", func(dir string) Options {
			writePair(t, filepath.Join(dir, "good"), good)
			write(t, filepath.Join(dir, "b", "tls.key"), other.key)
			return Options{Dir: dir}
		}, []string{"<dir>/b/tls.key has no certificate: want <dir>/b/tls.crt"}},
		{"a bad pair among good ones fails the set", func(dir string) Options {
			write(t, filepath.Join(dir, "b.crt"), other.cert)
			write(t, filepath.Join(dir, "b.key"), good.key)
			return Options{Files: []Pair{writePair(t, filepath.Join(dir, "good"), good)}, Dir: dir}
		}, []string{"key <dir>/b.key for certificate <dir>/b.crt"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := New(c.setup(dir))
			if err == nil {
				t.Fatalf("New succeeded (names %q)", s.Names())
			}
			for _, w := range c.want {
				if w = strings.ReplaceAll(w, "<dir>", dir); !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not say %q", err, w)
				}
			}
		})
	}
}

func TestDirConventions(t *testing.T) {
	now := time.Now()
	ca, dir := newCA(t), t.TempDir()
	a, b, c := ca.valid(t, now, "a", "a.example.com"), ca.valid(t, now, "b", "b.example.com"), ca.valid(t, now, "c", "c.example.com")
	writePair(t, filepath.Join(dir, "b"), b)              // flat
	write(t, filepath.Join(dir, "a", "tls.crt"), a.cert)  // a subdirectory, Kubernetes' keys
	write(t, filepath.Join(dir, "a", "tls.key"), a.key)   //
	elsewhere := t.TempDir()                              // a link to a subdirectory
	write(t, filepath.Join(elsewhere, "tls.crt"), c.cert) //
	write(t, filepath.Join(elsewhere, "tls.key"), c.key)  //
	if err := os.Symlink(elsewhere, filepath.Join(dir, "c-link")); err != nil {
		t.Fatal(err)
	}
	// Not pairs, and no error: hidden names, other files, an empty subdirectory, a
	// dangling link.
	write(t, filepath.Join(dir, ".swap.crt"), []byte("garbage"))
	write(t, filepath.Join(dir, "..data", "tls.crt"), []byte("garbage"))
	write(t, filepath.Join(dir, "notes.txt"), []byte("garbage"))
	write(t, filepath.Join(dir, "x.pem"), []byte("garbage"))
	if err := os.Mkdir(filepath.Join(dir, "lost+found"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "nowhere"), filepath.Join(dir, "dangling")); err != nil {
		t.Fatal(err)
	}

	s, err := New(Options{Dir: dir, Clock: clock.NewFake(now)})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Names(), []string{"a.example.com", "b.example.com", "c.example.com"}; !slices.Equal(got, want) {
		t.Errorf("Names() = %q, want %q", got, want)
	}
	for sni, want := range map[string]string{"a.example.com": "a", "b.example.com": "b", "c.example.com": "c", "": "a", "z.org": "a"} {
		if got := served(t, s, sni); got != want {
			t.Errorf("SNI %q: served %q, want %q (default: the first by name)", sni, got, want)
		}
	}

	// With Files as well, the first of Files is the default.
	d := writePair(t, filepath.Join(t.TempDir(), "explicit"), ca.valid(t, now, "explicit", "explicit.example.com"))
	s, err = New(Options{Files: []Pair{d}, Dir: dir, Clock: clock.NewFake(now)})
	if err != nil {
		t.Fatal(err)
	}
	if got := served(t, s, ""); got != "explicit" {
		t.Errorf("default with Files and Dir: %q, want explicit", got)
	}
	if got := served(t, s, "b.example.com"); got != "b" {
		t.Errorf("b.example.com with Files and Dir: %q", got)
	}
}

// observed is a logger whose lines a test can count.
func observed() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zap.InfoLevel)
	return zap.New(core), logs
}

func count(logs *observer.ObservedLogs, snippet string) int {
	return logs.FilterMessageSnippet(snippet).Len()
}

func TestRunReloadsOnChange(t *testing.T) {
	now := time.Now()
	fake := clock.NewFake(now)
	ca, dir := newCA(t), t.TempDir()
	log, logs := observed()
	base := filepath.Join(dir, "site")
	v1, v2, v3 := ca.valid(t, now, "v1", "site.example.com"), ca.valid(t, now, "v2", "site.example.com"), ca.valid(t, now, "v3", "site.example.com")
	writePair(t, base, v1)
	s, err := New(Options{Dir: dir, Clock: fake, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	poll.Until(t, 5*time.Second, "Run's ticker armed", poll.True(func() bool { return fake.Waiters() == 1 }))

	// Each step is one poll: the test waits for what it does before the next, so that
	// no tick is dropped unread.
	step := func() { fake.Step(2 * time.Second) }
	servedEventually := func(what, want string) {
		t.Helper()
		poll.Until(t, 5*time.Second, what, func() error {
			if got := served(t, s, "site.example.com"); got != want {
				return errors.New("served " + got)
			}
			return nil
		})
	}
	failedEventually := func(what string, n int) {
		t.Helper()
		poll.Until(t, 5*time.Second, what, poll.True(func() bool { return count(logs, "reload failed") == n }))
		if got := served(t, s, "site.example.com"); got != "v2" {
			t.Fatalf("after %s: served %q, want the old v2", what, got)
		}
	}

	writePair(t, base, v2)
	step()
	servedEventually("the replaced certificate", "v2")

	// A copy half done: the new certificate is there, its key is not yet.
	write(t, base+".crt", v3.cert)
	step()
	failedEventually("a mismatched key", 1)
	if e := logs.FilterMessageSnippet("reload failed").All()[0]; !strings.Contains(e.ContextMap()["error"].(string), base+".key") {
		t.Errorf("the failure does not name the key: %v", e.ContextMap())
	}

	// Still broken, differently: a certificate file being written.
	write(t, base+".crt", v3.cert[:100])
	step()
	failedEventually("a half-written certificate", 2)

	// Fixed: picked up at the next poll.
	writePair(t, base, v3)
	step()
	servedEventually("the fixed set", "v3")

	// The directory listing counts too: a pair added, then removed.
	writePair(t, filepath.Join(dir, "more"), ca.valid(t, now, "more", "more.example.com"))
	step()
	poll.Until(t, 5*time.Second, "the added pair", poll.True(func() bool { return slices.Contains(s.Names(), "more.example.com") }))
	for _, f := range []string{"more.crt", "more.key"} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	step()
	poll.Until(t, 5*time.Second, "the removed pair gone", poll.True(func() bool { return !slices.Contains(s.Names(), "more.example.com") }))
	if got := count(logs, "reloaded"); got != 4 {
		t.Errorf("%d reloads logged, want 4 (v2, v3, more added, more removed)", got)
	}
}

// poll is called directly here, to see what a poll that changes nothing does: nothing,
// and a failure that persists is logged once.
func TestPollLogsAFailureOnce(t *testing.T) {
	now := time.Now()
	ca, dir := newCA(t), t.TempDir()
	log, logs := observed()
	base := filepath.Join(dir, "site")
	v1 := ca.valid(t, now, "v1", "site.example.com")
	writePair(t, base, v1)
	s, err := New(Options{Dir: dir, Clock: clock.NewFake(now), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	first := s.cur.Load()
	s.poll()
	if s.cur.Load() != first || count(logs, "reloaded") != 0 {
		t.Fatal("a poll of unchanged files loaded them again")
	}

	write(t, base+".key", ca.valid(t, now, "x", "x").key)
	for range 3 {
		s.poll()
	}
	if got := count(logs, "reload failed"); got != 1 {
		t.Errorf("a persisting bad key logged %d times, want 1", got)
	}
	// Back to the files being served: nothing to load, and the failure is over...
	write(t, base+".key", v1.key)
	s.poll()
	if s.cur.Load() != first || count(logs, "reloaded") != 0 {
		t.Error("restoring the served files loaded them again")
	}
	// ...so the same failure again is news.
	write(t, base+".key", ca.valid(t, now, "y", "y").key)
	s.poll()
	if got := count(logs, "reload failed"); got != 2 {
		t.Errorf("a new failure after a recovery: %d logged, want 2", got)
	}

	// A failure before parsing (half a pair in the listing) is logged once as well.
	if err := os.Remove(base + ".key"); err != nil {
		t.Fatal(err)
	}
	s.poll()
	s.poll()
	if got := count(logs, "reload failed"); got != 3 {
		t.Errorf("a missing key: %d failures logged, want 3", got)
	}
	if got := served(t, s, "site.example.com"); got != "v1" {
		t.Errorf("served %q through the failures, want v1", got)
	}
}

// A Kubernetes Secret volume: the keys are links into ..data, itself a link to a
// timestamped directory that the kubelet replaces by renaming a new link over it.
func TestKubernetesSecretSwap(t *testing.T) {
	now := time.Now()
	ca, dir := newCA(t), t.TempDir()
	mount := func(ts string, p pemPair) {
		write(t, filepath.Join(dir, ts, "tls.crt"), p.cert)
		write(t, filepath.Join(dir, ts, "tls.key"), p.key)
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(ts, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	mount("..2025_01_01_00_00_00.1", ca.valid(t, now, "old", "site.example.com"))
	for _, k := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", k), filepath.Join(dir, k)); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(Options{Dir: dir, Clock: clock.NewFake(now)})
	if err != nil {
		t.Fatal(err)
	}
	if got := served(t, s, "site.example.com"); got != "old" {
		t.Fatalf("served %q", got)
	}
	mount("..2025_02_01_00_00_00.2", ca.valid(t, now, "new", "site.example.com"))
	s.poll()
	if got := served(t, s, "site.example.com"); got != "new" {
		t.Errorf("after the kubelet's swap: served %q, want new", got)
	}
}

func TestReloadNow(t *testing.T) {
	now := time.Now()
	ca, dir := newCA(t), t.TempDir()
	log, logs := observed()
	base := filepath.Join(dir, "site")
	writePair(t, base, ca.valid(t, now, "v1", "site.example.com"))
	s, err := New(Options{Dir: dir, Clock: clock.NewFake(now), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err != nil || count(logs, "reloaded") != 1 {
		t.Fatalf("Reload of unchanged files: %v (it loads them anyway)", err)
	}
	v2 := ca.valid(t, now, "v2", "site.example.com")
	write(t, base+".crt", v2.cert)
	err = s.Reload()
	if err == nil || !strings.Contains(err.Error(), base+".key") {
		t.Fatalf("Reload of a mismatched pair: %v", err)
	}
	if got := served(t, s, "site.example.com"); got != "v1" {
		t.Errorf("after a failed Reload: served %q, want v1", got)
	}
	if count(logs, "reload failed") != 1 {
		t.Error("a failed Reload was not logged")
	}
	write(t, base+".key", v2.key)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := served(t, s, "site.example.com"); got != "v2" {
		t.Errorf("after Reload: served %q, want v2", got)
	}
}

// serveTLS accepts on a real TLS listener with cfg and completes each handshake.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake() // a refused client is an error here; the client checks
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

func TestHandshake(t *testing.T) {
	now := time.Now()
	ca, dir := newCA(t), t.TempDir()
	def := ca.issue(t, leafSpec{id: "default", notBefore: now.Add(-day), notAfter: now.Add(30 * day),
		names: []string{"gateway.local"}, ips: []net.IP{net.IPv4(127, 0, 0, 1)}})
	s, err := New(Options{
		Files: []Pair{
			writePair(t, filepath.Join(dir, "default"), def),
			writePair(t, filepath.Join(dir, "hello"), ca.valid(t, now, "hello", "hello.default.example.com")),
			writePair(t, filepath.Join(dir, "wild"), ca.valid(t, now, "wild", "*.default.example.com")),
		},
		Clock: clock.NewFake(now),
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.TLSConfig()
	if cfg.MinVersion != tls.VersionTLS12 || len(cfg.NextProtos) != 0 || len(cfg.Certificates) != 0 {
		t.Errorf("TLSConfig: MinVersion %x, NextProtos %q, %d static certificates", cfg.MinVersion, cfg.NextProtos, len(cfg.Certificates))
	}
	cfg.NextProtos = []string{"h2", "http/1.1"} // as the gateway sets them
	addr := serveTLS(t, cfg)

	for _, c := range []struct{ serverName, want string }{
		{"hello.default.example.com", "hello"},
		{"other.default.example.com", "wild"},
		{"", "default"}, // dialled by IP: no SNI, verified against the default's IP SAN
	} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: c.serverName, RootCAs: ca.pool, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Errorf("handshake for %q: %v", c.serverName, err)
			continue
		}
		st := conn.ConnectionState()
		conn.Close()
		if got := st.PeerCertificates[0].Subject.CommonName; got != c.want {
			t.Errorf("SNI %q: peer certificate %q, want %q", c.serverName, got, c.want)
		}
		if st.NegotiatedProtocol != "http/1.1" || st.Version < tls.VersionTLS12 {
			t.Errorf("SNI %q: ALPN %q, version %x", c.serverName, st.NegotiatedProtocol, st.Version)
		}
	}
	if conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "hello.default.example.com", RootCAs: ca.pool, MaxVersion: tls.VersionTLS11}); err == nil {
		conn.Close()
		t.Error("a TLS 1.1 client got a handshake")
	}
}

// Among certificates for one name, the client's abilities come first: an RSA-only
// client gets the RSA certificate even when the ECDSA one lives longer, and the other
// way round.
func TestHandshakePicksWhatTheClientSupports(t *testing.T) {
	now := time.Now()
	ca, dir := newCA(t), t.TempDir()
	name := "dual.example.com"
	for _, order := range [][2]bool{{false, true}, {true, false}} { // which key type lives longer
		ecTo, rsaTo := 20*day, 30*day
		if order[0] {
			ecTo, rsaTo = rsaTo, ecTo
		}
		s, err := New(Options{
			Files: []Pair{
				writePair(t, filepath.Join(dir, "ec"), ca.issue(t, leafSpec{id: "ecdsa", notBefore: now.Add(-day), notAfter: now.Add(ecTo), names: []string{name}})),
				writePair(t, filepath.Join(dir, "rsa"), ca.issue(t, leafSpec{id: "rsa", notBefore: now.Add(-day), notAfter: now.Add(rsaTo), names: []string{name}, rsa: true})),
			},
			Clock: clock.NewFake(now),
		})
		if err != nil {
			t.Fatal(err)
		}
		addr := serveTLS(t, s.TLSConfig())
		for suite, want := range map[uint16]string{
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256:   "rsa",
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: "ecdsa",
		} {
			conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: name, RootCAs: ca.pool,
				MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{suite}})
			if err != nil {
				t.Errorf("%s-only client: %v", want, err)
				continue
			}
			got := conn.ConnectionState().PeerCertificates[0].Subject.CommonName
			conn.Close()
			if got != want {
				t.Errorf("%s-only client got %q", want, got)
			}
		}
	}
}
