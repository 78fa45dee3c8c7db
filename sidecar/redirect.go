package sidecar

import (
	"errors"
	"fmt"
	"net/http"
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
