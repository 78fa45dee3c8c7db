package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"

	"github.com/deputyhq/deputy/sidecar"
)

// PprofConfig is the optional listener serving Go's runtime profiles, for
// profiling a running sidecar under real load.
type PprofConfig struct {
	Addr string `yaml:"addr" usage:"loopback host:port serving Go's profiles under /debug/pprof/ (off when empty); heap profiling runs only when set"`
}

// Validate allows only loopback addresses: profiles and the command line
// they expose (which may carry secrets) are for the operator on the host,
// never for the network.
func (c *PprofConfig) Validate() error {
	if c.Addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return sidecar.Invalid("pprof.addr", "must be host:port, not %q", c.Addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return sidecar.Invalid("pprof.addr", "bad port in %q", c.Addr)
	}
	if !sidecar.LoopbackHost(host) {
		return sidecar.Invalid("pprof.addr", "must be a loopback address (127.0.0.1, ::1 or localhost), not %q", host)
	}
	return nil
}

// startPprof serves the profiles on addr, on a mux of their own so that
// nothing registered on http.DefaultServeMux leaks onto a listener. It
// returns the function that stops it.
func startPprof(addr string) (func(context.Context) error, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof.addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: readHeaderTimeout}
	done := make(chan error, 1)
	go func() { done <- ignoreClosed(srv.Serve(l)) }()
	return func(ctx context.Context) error {
		// A CPU profile in progress may take its full duration: cut it.
		return errors.Join(shutdownHTTP(ctx, "pprof", srv), <-done)
	}, nil
}
