package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TLSFiles are a private CA and a server certificate it signed for
// 127.0.0.1, as PEM files, for servers a test runs with TLS (redis-server,
// or in process).
type TLSFiles struct {
	CA, Cert, Key string // file paths
	// Client trusts the CA (and nothing else) and presents the certificate
	// as its own: Redis asks clients for one (tls-auth-clients yes).
	Client *tls.Config
	// Server serves the certificate, for servers a test runs in process.
	Server *tls.Config
}

// NewTLSFiles makes a CA and a certificate for 127.0.0.1 in a temporary
// directory.
func NewTLSFiles(t testing.TB) *TLSFiles {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "oshirase test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		// Redis nodes use the one certificate both ways: as servers, and as
		// clients of each other (cluster bus, replication, Sentinel).
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	f := &TLSFiles{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem")}
	for _, w := range []struct {
		path, typ string
		der       []byte
	}{{f.CA, "CERTIFICATE", caDER}, {f.Cert, "CERTIFICATE", der}, {f.Key, "EC PRIVATE KEY", keyDER}} {
		if err := os.WriteFile(w.path, pem.EncodeToMemory(&pem.Block{Type: w.typ, Bytes: w.der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	pair := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	f.Client = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
	f.Server = &tls.Config{Certificates: []tls.Certificate{pair}}
	return f
}

// RedisArgs are redis-server arguments that serve TLS only, on port (they
// come after RedisServer's own --port, which they turn off). As by Redis'
// default, clients must present a certificate the CA signed.
func (f *TLSFiles) RedisArgs(port int) []string {
	return []string{"--port", "0", "--tls-port", strconv.Itoa(port), "--tls-cert-file", f.Cert, "--tls-key-file", f.Key,
		"--tls-ca-cert-file", f.CA}
}

// Query is the REDIS_URL parameters for these files: trust the CA, present
// the certificate.
func (f *TLSFiles) Query() string {
	return "tls_ca_file=" + url.QueryEscape(f.CA) + "&tls_cert_file=" + url.QueryEscape(f.Cert) + "&tls_key_file=" + url.QueryEscape(f.Key)
}
