package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// runTail runs `decisions tail` and fails the test if it had to be
// stopped: every case here must return by itself.
func runTail(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, stopped, err := tail(args...)
	if stopped {
		t.Fatalf("tail %v did not return by itself\n%s", args, out)
	}
	return out, err
}

// tail runs the command with a deadline; stopped says it had to be ended.
func tail(args ...string) (out string, stopped bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := newDecisionsTailCmd()
	var buf, errOut bytes.Buffer
	cmd.SetOut(&buf)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(ctx)
	return buf.String(), ctx.Err() != nil, err
}

func addRecords(t *testing.T, srv *redistest.Server, stream string, ids ...string) {
	t.Helper()
	c := srv.Client()
	for i, id := range ids {
		rec, _ := json.Marshal(decisionlog.Record{DecisionID: id, Time: time.Unix(int64(1_800_000_000+i), 0).UTC(),
			Method: "GET", Path: "/p/" + id, Result: "allow", Reason: "public", HTTPStatus: 200})
		if err := c.XAdd(context.Background(), &goredis.XAddArgs{Stream: stream, Values: map[string]any{decisionlog.RecordField: string(rec)}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDecisionsTailSharesServeRedisSettings(t *testing.T) {
	srv := redistest.Start(t)
	addRecords(t, srv, decisionlog.DefaultStream, "d-1", "d-2", "d-3")
	addRecords(t, srv, "other:decisions", "o-1")
	file := filepath.Join(t.TempDir(), "deputy.yaml")
	if err := os.WriteFile(file, []byte("redis:\n  addrs: ["+srv.Addr+"]\ndecision_log:\n  stream: other:decisions\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{name: "history with a limit returns at the end of the stream", args: []string{"--redis-addrs", srv.Addr, "--from", "0", "--limit", "10"},
			want: []string{"d-1", "d-2", "d-3"}},
		{name: "the limit stops it first", args: []string{"--redis-addrs", srv.Addr, "--from", "0", "--limit", "2"},
			want: []string{"d-1", "d-2"}},
		{name: "the earlier flag names still work", args: []string{"--redis-addr", srv.Addr, "--stream", "other:decisions", "--from", "0", "--limit", "5"},
			want: []string{"o-1"}},
		{name: "serve's config file names Redis and the stream", args: []string{"--config", file, "--from", "0", "--limit", "5"},
			want: []string{"o-1"}},
		{name: "serve's environment variables", env: map[string]string{"DEPUTY_REDIS_ADDRS": srv.Addr}, args: []string{"--from", "0", "--limit", "5", "--json"},
			want: []string{`"decision_id":"d-1"`, `"decision_id":"d-2"`, `"decision_id":"d-3"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			out, err := runTail(t, tc.args...)
			if err != nil {
				t.Fatalf("tail: %v", err)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("%d lines, want %d:\n%s", len(lines), len(tc.want), out)
			}
			for i, w := range tc.want {
				if !strings.Contains(lines[i], w) {
					t.Errorf("line %d = %q, want %q", i, lines[i], w)
				}
			}
		})
	}
}

func TestDecisionsTailRefusesBadSettings(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		field string
	}{
		{name: "no Redis", args: []string{"--from", "0", "--limit", "1"}, field: "redis.addrs"},
		{name: "several addresses without cluster or sentinel", args: []string{"--redis-addrs", "127.0.0.1:1,127.0.0.1:2"}, field: "redis.addrs"},
		{name: "TLS options without TLS", args: []string{"--redis-addrs", "127.0.0.1:1", "--redis-tls-server-name", "redis"}, field: "redis.tls"},
		{name: "negative limit", args: []string{"--redis-addrs", "127.0.0.1:1", "--limit", "-1"}, field: "limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("DEPUTY_REDIS_ADDRS", "")
			os.Unsetenv("DEPUTY_REDIS_ADDRS")
			_, err := runTail(t, tc.args...)
			if sidecar.ErrorField(err) != tc.field {
				t.Fatalf("err = %v, want one on %s", err, tc.field)
			}
		})
	}
}

func TestDecisionsTailFollowsNewDecisions(t *testing.T) {
	srv := redistest.Start(t)
	addRecords(t, srv, decisionlog.DefaultStream, "old-1")
	done := make(chan string, 1)
	go func() {
		out, stopped, err := tail("--redis-addrs", srv.Addr, "--limit", "1")
		if err != nil || stopped {
			out = fmt.Sprintf("error %v, stopped %v: %s", err, stopped, out)
		}
		done <- out
	}()
	// Without --from, tail waits for decisions logged after it started:
	// keep logging until one reaches it.
	for i := 0; ; i++ {
		select {
		case out := <-done:
			if strings.Contains(out, "old-1") || !strings.Contains(out, "new-") {
				t.Fatalf("followed %q, want a new decision only", out)
			}
			return
		case <-time.After(100 * time.Millisecond):
			addRecords(t, srv, decisionlog.DefaultStream, "new-"+strings.Repeat("x", i%3+1))
		}
	}
}

// tail reaches a TLS-only Redis with serve's TLS settings, and refuses a
// server its CA does not vouch for.
func TestDecisionsTailOverTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeSelfSigned(t, dir)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsAddr := l.Addr().String()
	l.Close()
	_, tlsPort, _ := net.SplitHostPort(tlsAddr)
	srv := redistest.Start(t, "--tls-port", tlsPort, "--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-auth-clients", "no")
	addRecords(t, srv, decisionlog.DefaultStream, "tls-1")

	out, err := runTail(t, "--redis-addrs", tlsAddr, "--redis-tls", "--redis-tls-ca-file", certFile, "--from", "0", "--limit", "5")
	if err != nil || !strings.Contains(out, "tls-1") {
		t.Fatalf("tail over TLS: %v\n%s", err, out)
	}
	if _, err := runTail(t, "--redis-addrs", tlsAddr, "--redis-tls", "--from", "0", "--limit", "5"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("err = %v, want the unknown server certificate refused", err)
	}
}

func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "redis"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "redis.crt"), filepath.Join(dir, "redis.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
