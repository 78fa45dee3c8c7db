package sidecar_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
)

func TestRedactURL(t *testing.T) {
	for raw, want := range map[string]string{
		"https://bundles.example.com/b.tar.gz":                                  "https://bundles.example.com/b.tar.gz",
		"https://ops:s3cret@bundles.example.com/b.tar.gz":                       "https://bundles.example.com/b.tar.gz",
		"https://ops@bundles.example.com:8443/b.tar.gz":                         "https://bundles.example.com:8443/b.tar.gz",
		"https://s3.example.com/b.tar.gz?X-Amz-Credential=AK&X-Amz-Signature=s": "https://s3.example.com/b.tar.gz?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED",
		"https://h/jwks?key#frag":                                               "https://h/jwks?key=REDACTED",
		"http://h/p?":                                                           "http://h/p",
		"://s3cret":                                                             "(unparsable URL)",
	} {
		if got := sidecar.RedactURL(raw); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", raw, got, want)
		}
	}
}

func TestRedactURLError(t *testing.T) {
	cause := errors.New("connection refused")
	var err error = &url.Error{Op: "Get", URL: "https://ops:***@h/b?sig=s3cret", Err: cause}
	got := sidecar.RedactURLError(err)
	if strings.Contains(got.Error(), "s3cret") || strings.Contains(got.Error(), "ops") {
		t.Errorf("credential kept: %v", got)
	}
	if !errors.Is(got, cause) || !strings.Contains(got.Error(), "https://h/b?sig=REDACTED") {
		t.Errorf("RedactURLError = %v, want the redacted URL and the cause", got)
	}
	plain := errors.New("other")
	if sidecar.RedactURLError(plain) != plain {
		t.Error("an error without a URL changed")
	}
}
