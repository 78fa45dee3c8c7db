package sidecar

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
)

// RefuseDowngrade is an http.Client CheckRedirect that follows redirects
// as Go does, except from https to plain http: what was asked for over TLS
// (keys, policy bundles) must not continue where anyone on the path can
// answer, nor take its Authorization header along, which Go forwards to
// the same host whatever the scheme.
func RefuseDowngrade(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("redirect from %s to %s refused: not https", RedactURL(via[0].URL.String()), RedactURL(req.URL.String()))
	}
	return nil
}

// RefusePlainRemote is RefuseDowngrade that also refuses a redirect to
// plain http on a host that is not loopback: what may only be fetched
// over https or from the host itself must not be sent across the network
// in clear by whoever answers first.
func RefusePlainRemote(req *http.Request, via []*http.Request) error {
	if err := RefuseDowngrade(req, via); err != nil {
		return err
	}
	if PlainRemote(req.URL) {
		return fmt.Errorf("redirect from %s to %s refused: plain http to a host that is not loopback", RedactURL(via[0].URL.String()), RedactURL(req.URL.String()))
	}
	return nil
}

// PlainRemote reports whether fetching u crosses the network in clear:
// plain http to a host that is not loopback, where anyone on the path can
// answer in the server's place.
func PlainRemote(u *url.URL) bool {
	return u.Scheme != "https" && !LoopbackHost(u.Hostname())
}

// LoopbackHost reports whether host (of a host:port or a URL) names only
// the loopback interface; an empty host means every interface.
func LoopbackHost(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}
