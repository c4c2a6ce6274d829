package devenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// DevCert is a certificate `rouse dev --tls` made for its gateway: a CA of its own (the
// file a client trusts: curl --cacert, grpc -ca) and a leaf it signed for the names.
type DevCert struct {
	CAFile, CertFile, KeyFile string
}

// WriteDevCert makes a new CA and a leaf for names (valid from now for 30 days) and
// writes them under dir: ca.crt, tls.crt (leaf then CA) and tls.key. A self-signed
// certificate for development only: the CA's key is not kept, so it signs nothing else.
func WriteDevCert(dir string, names []string, now time.Time) (DevCert, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return DevCert{}, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return DevCert{}, err
	}
	serial := func() *big.Int {
		n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
		return n
	}
	ca := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "rouse dev CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return DevCert{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return DevCert{}, err
	}
	leaf := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return DevCert{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return DevCert{}, err
	}
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	dc := DevCert{CAFile: filepath.Join(dir, "ca.crt"), CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{dc.CAFile, pemOf("CERTIFICATE", caDER), 0o644},
		{dc.CertFile, append(pemOf("CERTIFICATE", leafDER), pemOf("CERTIFICATE", caDER)...), 0o644},
		{dc.KeyFile, pemOf("PRIVATE KEY", keyDER), 0o600},
	} {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return DevCert{}, fmt.Errorf("dev certificate: %w", err)
		}
	}
	return dc, nil
}
