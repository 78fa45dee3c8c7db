package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all signed by the CA, and returns their paths.
type pki struct {
	caFile, certFile, keyFile string
	client                    tls.Certificate
	pool                      *x509.CertPool
}

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(name string, usage x509.ExtKeyUsage, ip bool) ([]byte, []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		if ip {
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sc, sk := issue("deputy", x509.ExtKeyUsageServerAuth, true)
	cc, ck := issue("envoy", x509.ExtKeyUsageClientAuth, false)
	client, err := tls.X509KeyPair(cc, ck)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pki{
		caFile:   write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})),
		certFile: write("server.pem", sc), keyFile: write("server-key.pem", sk),
		client: client, pool: pool,
	}
}

func startServer(t *testing.T, change func(*Config)) Config {
	t.Helper()
	cfg := testConfig(t, "../../policies", func(c *Config) {
		c.DecisionLog.Sink = "none"
		change(c)
	})
	runServer(t, &cfg)
	return cfg
}

func checkVia(conn *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{})
	return err
}

func TestGRPCMutualTLS(t *testing.T) {
	p := newPKI(t)
	cfg := startServer(t, func(c *Config) {
		c.GRPC.TLSCert, c.GRPC.TLSKey, c.GRPC.ClientCA = p.certFile, p.keyFile, p.caFile
	})
	dial := func(creds credentials.TransportCredentials) error {
		conn, err := grpc.NewClient(cfg.GRPC.Addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer conn.Close()
		return checkVia(conn)
	}
	if err := dial(credentials.NewTLS(&tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.client}})); err != nil {
		t.Fatalf("client with a certificate refused: %v", err)
	}
	if err := dial(credentials.NewTLS(&tls.Config{RootCAs: p.pool})); err == nil {
		t.Fatal("client without a certificate accepted")
	}
	if err := dial(insecure.NewCredentials()); err == nil {
		t.Fatal("plaintext client accepted")
	}
}

func TestGRPCUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "deputy.sock")
	startServer(t, func(c *Config) { c.GRPC.Addr = "unix:" + sock })
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := checkVia(conn); err != nil {
		t.Fatalf("check over unix socket: %v", err)
	}
	// Decisions and actor tokens go to whoever connects: by default the
	// socket is the owner's alone, whatever the umask.
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
}

// The socket's mode is set before anyone can connect, whatever the
// umask; what sits at its path is replaced only if it is a stale socket.
func TestGRPCUnixSocketFile(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
	dir := t.TempDir()
	sock := filepath.Join(dir, "deputy.sock")
	for _, mode := range []os.FileMode{0o600, 0o660} {
		l, err := listen("unix:"+sock, mode)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(sock)
		l.Close()
		if err != nil || fi.Mode().Perm() != mode || fi.Mode().Type() != os.ModeSocket {
			t.Fatalf("socket mode %v (%v), want %v", fi.Mode(), err, mode)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want the socket alone", len(entries))
	}
	file := filepath.Join(dir, "deputy.yaml")
	if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if l, err := listen("unix:"+file, 0o600); err == nil {
		l.Close()
		t.Fatal("listened over a regular file")
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep me" {
		t.Fatalf("the file at the socket path was changed: %q, %v", b, err)
	}
}
