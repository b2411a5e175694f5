package testenv

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
)

// DKIMKey writes a fresh DKIM private key of kind ("rsa-pkcs1",
// "rsa-pkcs8" or "ed25519") as PEM in a temporary folder and returns its
// file and the TXT record that publishes its public key, for tests that
// verify signatures with an independent verifier.
func DKIMKey(t testing.TB, kind string) (file, txt string) {
	t.Helper()
	var block *pem.Block
	var pub []byte
	switch kind {
	case "rsa-pkcs1", "rsa-pkcs8":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		if pub, err = x509.MarshalPKIXPublicKey(&k.PublicKey); err != nil {
			t.Fatal(err)
		}
		if kind == "rsa-pkcs1" {
			block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
		} else {
			der, err := x509.MarshalPKCS8PrivateKey(k)
			if err != nil {
				t.Fatal(err)
			}
			block = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
		}
		txt = "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(pub)
	case "ed25519":
		pk, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		block = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
		// RFC 8463: p= is the raw 32-byte key, not SubjectPublicKeyInfo.
		txt = "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pk)
	}
	file = filepath.Join(t.TempDir(), "dkim.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return file, txt
}
