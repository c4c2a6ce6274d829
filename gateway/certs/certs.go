package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/clock"
)

// Options says where the certificates are and how often to look at them again.
type Options struct {
	// Files are pairs given by path; the first is the default certificate.
	Files []Pair
	// Dir is a directory of pairs (see the package comment for its conventions); its
	// first pair by name is the default when Files is empty. Files and Dir may both be set.
	Dir string
	// Shared is a second source every gateway of a fleet reads (ConsulKV); its pairs come
	// after those of Files and Dir.
	Shared Shared
	// Clock paces Run's polls and tells which certificates are valid (default clock.Real).
	Clock clock.Clock
	// Reload is how often Run looks at the files again (default 2s).
	Reload time.Duration
	// Logger gets reloads and their failures (default: none).
	Logger *zap.Logger
}

// Pair is a certificate file (PEM, leaf first, then intermediates) and its key file.
type Pair struct{ CertFile, KeyFile string }

const defaultReload = 2 * time.Second

// Store serves the current set of certificates to handshakes and replaces it when its
// files change. Its methods are safe for concurrent use.
type Store struct {
	files  []Pair
	dir    string
	shared Shared
	clock  clock.Clock
	every  time.Duration
	log    *zap.Logger

	cur atomic.Pointer[set] // what handshakes read; never nil after New

	mu      sync.Mutex // one load at a time: Run's poll or Reload
	tried   digest     // a set that failed to load, not tried again until it changes; guarded by mu
	lastErr string     // the last failure logged by poll, logged once; guarded by mu
}

// New loads every certificate once. Any pair that cannot be read or parsed, a key that
// is not its certificate's, or no certificate at all is an error that names the file.
func New(o Options) (*Store, error) {
	if len(o.Files) == 0 && o.Dir == "" && o.Shared == nil {
		return nil, errors.New("certs: no certificate: Options.Files, Dir and Shared are all empty")
	}
	for i, p := range o.Files {
		if p.CertFile == "" || p.KeyFile == "" {
			return nil, fmt.Errorf("certs: Options.Files[%d] (%q, %q): needs both CertFile and KeyFile", i, p.CertFile, p.KeyFile)
		}
	}
	s := &Store{files: slices.Clone(o.Files), dir: o.Dir, shared: o.Shared, clock: o.Clock, every: o.Reload, log: o.Logger}
	if s.clock == nil {
		s.clock = clock.Real{}
	}
	if s.every <= 0 {
		s.every = defaultReload
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	srcs, d, err := readAll(s.files, s.dir, s.shared)
	if err != nil {
		return nil, err
	}
	st, err := build(srcs, d, s.clock.Now(), s.log)
	if err != nil {
		return nil, err
	}
	s.cur.Store(st)
	s.log.Info("tls certificates loaded", st.fields()...)
	return s, nil
}

// GetCertificate picks the certificate for a handshake by its SNI (see the package
// comment); it never fails, so that every client gets a handshake. It is
// tls.Config.GetCertificate.
func (s *Store) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cur.Load().pick(hello, s.clock).cert, nil
}

// TLSConfig is a server config that takes its certificates from s: TLS 1.2 at least, no
// ALPN protocols (the server sets the ones it speaks: the gateway offers h2 and
// http/1.1). Nothing else is set, so Go's defaults for cipher suites and curves hold.
// Each call returns a new config the caller may change.
func (s *Store) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.GetCertificate,
	}
}

// Names are the DNS names the current set serves, sorted ("*.x" for wildcards).
func (s *Store) Names() []string { return slices.Clone(s.cur.Load().names) }

// Run looks at the files every Options.Reload until ctx ends and swaps in the new set
// when they changed and load whole; a failure is logged and the old set kept.
func (s *Store) Run(ctx context.Context) {
	t := s.clock.NewTicker(s.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			s.poll()
		}
	}
}

// Reload loads the files now, changed or not (for SIGHUP). If the new set fails, the old
// one stays and the error is returned (and logged).
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.load(true); err != nil {
		s.log.Error("tls certificate reload failed; still serving the previous set", zap.Error(err))
		return err
	}
	s.lastErr = ""
	s.log.Info("tls certificates reloaded", s.cur.Load().fields()...)
	return nil
}

// poll is one look of Run's: a changed set is loaded, and a failure logged once until
// it changes (a poll every 2s must not repeat the same line forever).
func (s *Store) poll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed, err := s.load(false)
	if err != nil {
		if msg := err.Error(); msg != s.lastErr {
			s.lastErr = msg
			s.log.Error("tls certificate reload failed; still serving the previous set, retrying at the next poll", zap.Error(err))
		}
		return
	}
	s.lastErr = ""
	if changed {
		s.log.Info("tls certificates reloaded", s.cur.Load().fields()...)
	}
}

// load reads the files and, when they differ from the set served and from the last set
// that failed (or when force), builds and swaps in the new set. The caller holds mu.
func (s *Store) load(force bool) (changed bool, err error) {
	srcs, d, err := readAll(s.files, s.dir, s.shared)
	if err != nil {
		return false, err
	}
	if !force {
		if d == s.cur.Load().digest {
			s.tried = digest{} // back to the served files
			return false, nil
		}
		if d == s.tried {
			return false, nil // the same broken files: fails the same way, logged already
		}
	}
	st, err := build(srcs, d, s.clock.Now(), s.log)
	if err != nil {
		s.tried = d
		return false, err
	}
	s.tried = digest{}
	// Handshakes under way finish with the set they read; open connections keep the
	// certificate they were handshaken with.
	s.cur.Store(st)
	return true, nil
}

// set is one loaded, immutable set of certificates.
type set struct {
	exact  map[string][]*entry // DNS SAN → certificates, best first (see finish)
	wild   map[string][]*entry // "<rest>" of a "*.<rest>" SAN → certificates, best first
	def    *entry              // the first loaded
	all    []*entry
	names  []string
	digest digest
}

func (st *set) add(e *entry) {
	if st.def == nil {
		st.def = e
	}
	st.all = append(st.all, e)
	for _, n := range e.names {
		if rest, ok := strings.CutPrefix(n, "*."); ok {
			st.wild[rest] = append(st.wild[rest], e)
		} else {
			st.exact[n] = append(st.exact[n], e)
		}
	}
}

// finish orders each name's certificates by NotAfter, latest first (load order on a
// tie), so that pick's first fit is the longest-lived, and lists the names.
func (st *set) finish() {
	byNotAfter := func(a, b *entry) int { return b.notAfter.Compare(a.notAfter) }
	for _, l := range st.exact {
		slices.SortStableFunc(l, byNotAfter)
	}
	for _, l := range st.wild {
		slices.SortStableFunc(l, byNotAfter)
	}
	for n := range st.exact {
		st.names = append(st.names, n)
	}
	for rest := range st.wild {
		st.names = append(st.names, "*."+rest)
	}
	slices.Sort(st.names)
}

// pick is the certificate for hello: see the package comment for the order.
func (st *set) pick(hello *tls.ClientHelloInfo, c clock.Clock) *entry {
	if hello == nil || hello.ServerName == "" {
		return st.def
	}
	name := normalize(hello.ServerName)
	exact := st.exact[name]
	var wild []*entry
	if i := strings.IndexByte(name, '.'); i > 0 { // a wildcard stands for one non-empty label
		wild = st.wild[name[i+1:]]
	}
	switch len(exact) + len(wild) {
	case 0:
		return st.def
	case 1:
		if len(exact) == 1 {
			return exact[0]
		}
		return wild[0]
	}
	// Several fit: score them. exact then wild, each latest NotAfter first, so the
	// first of the best score wins the rest of the order.
	now := c.Now()
	var best *entry
	bestScore := -1
	for _, l := range [2][]*entry{exact, wild} {
		for _, e := range l {
			score := 0
			if hello.SupportsCertificate(e.cert) == nil {
				score += 2 // one the client cannot use fails the handshake outright
			}
			if e.validAt(now) {
				score++
			}
			if score > bestScore {
				best, bestScore = e, score
			}
		}
	}
	return best
}

// fields describe the set in a log line.
func (st *set) fields() []zap.Field {
	return []zap.Field{
		zap.Int("certificates", len(st.all)),
		zap.Strings("names", st.names),
		zap.String("default", st.def.file),
	}
}

// normalize is the form names are compared in: lower case, no trailing dot.
func normalize(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}
