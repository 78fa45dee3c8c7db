package sidecar

import (
	"net/url"
	"strings"
)

// RedactURL returns raw fit to show in logs, error messages and /readyz:
// the userinfo is dropped and every query value masked, as that is where
// URLs carry their credential (user:pass@, S3 and GCS signed-URL
// signatures, API keys). The parameter names stay, so the reader still
// sees which URL is meant. Fetching uses the URL as configured; only what
// is shown goes through here.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)" // url.Parse's error repeats the URL
	}
	u.User = nil
	u.Fragment, u.RawFragment = "", ""
	u.ForceQuery = false
	if u.RawQuery != "" {
		params := strings.Split(u.RawQuery, "&")
		for i, p := range params {
			name, _, _ := strings.Cut(p, "=")
			params[i] = name + "=REDACTED"
		}
		u.RawQuery = strings.Join(params, "&")
	}
	return u.String()
}

// RedactURLError returns an error of http.Client.Do with its URL redacted
// by RedactURL (Go masks only the password); other errors are returned as
// they are.
func RedactURLError(err error) error {
	ue, ok := err.(*url.Error)
	if !ok {
		return err
	}
	return &url.Error{Op: ue.Op, URL: RedactURL(ue.URL), Err: ue.Err}
}
