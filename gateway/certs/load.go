package certs

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// The file names of the Dir conventions (see the package comment).
const (
	certExt    = ".crt"
	keyExt     = ".key"
	subdirCert = "tls.crt"
	subdirKey  = "tls.key"
)

// digest identifies a set's files by path and content: a poll compares it with the set
// being served to tell whether anything changed. Content rather than mtime+size, because
// a renewed certificate often has the same size and a copy within the filesystem's
// timestamp granularity keeps the same mtime; the files are a few KB, read every poll.
type digest [sha256.Size]byte

// source is one pair as read from disk.
type source struct {
	certFile, keyFile string
	certPEM, keyPEM   []byte
}

// readAll lists the pairs of files and dir (in that order: the first is the default) and
// reads their bytes. Errors name the file or directory.
func readAll(files []Pair, dir string, shared Shared) ([]source, digest, error) {
	pairs := slices.Clone(files)
	if dir != "" {
		dp, err := dirPairs(dir)
		if err != nil {
			return nil, digest{}, err
		}
		pairs = append(pairs, dp...)
	}
	var remote []source
	if shared != nil {
		sp, err := shared.Pairs()
		if err != nil {
			return nil, digest{}, fmt.Errorf("certs: %s: %w", shared, err)
		}
		for _, p := range sp {
			remote = append(remote, source{certFile: p.Name + "/" + subdirCert, keyFile: p.Name + "/" + subdirKey, certPEM: p.CertPEM, keyPEM: p.KeyPEM})
		}
	}
	if len(pairs) == 0 && len(remote) == 0 {
		if shared != nil && dir == "" && len(files) == 0 {
			return nil, digest{}, fmt.Errorf("certs: no certificate: %s has no <name>/%s + <name>/%s pairs", shared, subdirCert, subdirKey)
		}
		return nil, digest{}, fmt.Errorf("certs: no certificate: %s has no %s pairs",
			dir, "<name>"+certExt+" + <name>"+keyExt+" or <name>/"+subdirCert+" + <name>/"+subdirKey)
	}
	h := sha256.New()
	srcs := make([]source, 0, len(pairs))
	var errs []error
	for _, p := range pairs {
		c, errC := os.ReadFile(p.CertFile)
		k, errK := os.ReadFile(p.KeyFile)
		if errC != nil || errK != nil {
			// *fs.PathError already names the file.
			errs = append(errs, prefix(errC), prefix(errK))
			continue
		}
		for _, b := range [][]byte{[]byte(p.CertFile), c, []byte(p.KeyFile), k} {
			// Length-prefixed, so that no two different sets hash the same bytes.
			fmt.Fprintf(h, "%d:", len(b))
			h.Write(b)
		}
		srcs = append(srcs, source{certFile: p.CertFile, keyFile: p.KeyFile, certPEM: c, keyPEM: k})
	}
	for _, r := range remote {
		for _, b := range [][]byte{[]byte(r.certFile), r.certPEM, []byte(r.keyFile), r.keyPEM} {
			fmt.Fprintf(h, "%d:", len(b))
			h.Write(b)
		}
		srcs = append(srcs, r)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, digest{}, err
	}
	var d digest
	h.Sum(d[:0])
	return srcs, d, nil
}

// prefix marks err as this package's; nil stays nil, for errors.Join.
func prefix(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("certs: %w", err)
}

// dirPairs lists dir's pairs by the two conventions, sorted by <name>.
func dirPairs(dir string) ([]Pair, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, prefix(err)
	}
	type named struct {
		name string
		p    Pair
	}
	var found []named
	var errs []error
	crt, key := map[string]bool{}, map[string]bool{}
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") {
			continue
		}
		if base, ok := strings.CutSuffix(n, certExt); ok && base != "" {
			crt[base] = true
			continue
		}
		if base, ok := strings.CutSuffix(n, keyExt); ok && base != "" {
			key[base] = true
			continue
		}
		path := filepath.Join(dir, n)
		isDir := e.IsDir()
		if e.Type()&fs.ModeSymlink != 0 {
			// A mounted Secret's <name> is a link to ..data/<name>; a link that leads
			// nowhere is not a pair, whatever it is.
			fi, err := os.Stat(path)
			isDir = err == nil && fi.IsDir()
		}
		if !isDir {
			continue
		}
		c, k := filepath.Join(path, subdirCert), filepath.Join(path, subdirKey)
		hasC, hasK := exists(c), exists(k)
		switch {
		case hasC && hasK:
			found = append(found, named{n, Pair{c, k}})
		case hasC:
			errs = append(errs, fmt.Errorf("certs: %s has no key: want %s", c, k))
		case hasK:
			errs = append(errs, fmt.Errorf("certs: %s has no certificate: want %s", k, c))
		}
	}
	for base := range crt {
		c, k := filepath.Join(dir, base+certExt), filepath.Join(dir, base+keyExt)
		if !key[base] {
			errs = append(errs, fmt.Errorf("certs: %s has no key: want %s", c, k))
			continue
		}
		found = append(found, named{base, Pair{c, k}})
	}
	for base := range key {
		if !crt[base] {
			c, k := filepath.Join(dir, base+certExt), filepath.Join(dir, base+keyExt)
			errs = append(errs, fmt.Errorf("certs: %s has no certificate: want %s", k, c))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// By <name>, then by path, so that "a.crt" and "a/tls.crt" have a fixed order too.
	slices.SortFunc(found, func(a, b named) int {
		return cmp.Or(strings.Compare(a.name, b.name), strings.Compare(a.p.CertFile, b.p.CertFile))
	})
	pairs := make([]Pair, len(found))
	for i, f := range found {
		pairs[i] = f.p
	}
	return pairs, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// entry is one loaded certificate.
type entry struct {
	cert      *tls.Certificate
	file      string // the certificate's file, for logs
	notBefore time.Time
	notAfter  time.Time
	names     []string // DNS SANs, lower-case, without a trailing dot
}

func (e *entry) validAt(now time.Time) bool {
	return !now.Before(e.notBefore) && !now.After(e.notAfter)
}

// parse checks one pair: every CERTIFICATE block parses, nothing is cut off, the key
// is the leaf's. Errors name the file at fault.
func parse(src source) (*entry, error) {
	if err := checkChain(src.certFile, src.certPEM); err != nil {
		return nil, err
	}
	c, err := tls.X509KeyPair(src.certPEM, src.keyPEM)
	if err != nil {
		// The certificate side is checked above, so this is the key's: unreadable,
		// or not the leaf's ("tls: private key does not match public key").
		return nil, fmt.Errorf("certs: key %s for certificate %s: %w", src.keyFile, src.certFile, err)
	}
	leaf := c.Leaf
	if leaf == nil { // GODEBUG x509keypairleaf=0
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certs: %s: %w", src.certFile, err)
		}
		c.Leaf = leaf
	}
	e := &entry{cert: &c, file: src.certFile, notBefore: leaf.NotBefore, notAfter: leaf.NotAfter}
	for _, n := range leaf.DNSNames {
		if n = normalize(n); n != "" && !slices.Contains(e.names, n) {
			e.names = append(e.names, n)
		}
	}
	return e, nil
}

// checkChain parses every CERTIFICATE block of a certificate file. tls.X509KeyPair parses
// only the leaf and stops quietly at a block cut short, so a half-written intermediate
// would otherwise be served to clients.
func checkChain(file string, data []byte) error {
	n, other := 0, ""
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			other = b.Type
			continue
		}
		n++
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return fmt.Errorf("certs: %s: certificate %d: %w", file, n, err)
		}
	}
	if bytes.Contains(rest, []byte("-----BEGIN")) {
		return fmt.Errorf("certs: %s: a PEM block is cut short (file still being written?)", file)
	}
	if n == 0 {
		if other != "" {
			return fmt.Errorf("certs: %s: no CERTIFICATE PEM block, only %s", file, other)
		}
		return fmt.Errorf("certs: %s: no CERTIFICATE PEM block", file)
	}
	return nil
}

// build parses every pair into a set; any bad pair fails the whole set, so that a set
// is served whole or not at all.
func build(srcs []source, d digest, now time.Time, log *zap.Logger) (*set, error) {
	st := &set{exact: map[string][]*entry{}, wild: map[string][]*entry{}, digest: d}
	var errs []error
	for _, src := range srcs {
		e, err := parse(src)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !e.validAt(now) {
			log.Warn("tls certificate not valid now; served only where no valid one fits",
				zap.String("file", e.file), zap.Time("not_before", e.notBefore), zap.Time("not_after", e.notAfter))
		}
		if len(e.names) == 0 {
			log.Warn("tls certificate has no DNS names; it can only be the default", zap.String("file", e.file))
		}
		st.add(e)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	st.finish()
	return st, nil
}
