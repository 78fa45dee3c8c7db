package main

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A CheckRequest holding its body in rawBody (Envoy's pack_as_bytes, as a
// decision log records it) is decided offline as serve decides it: the
// same body in body or in rawBody reaches parsed_body alike, a multipart
// upload holding bytes that are not UTF-8 included.
func TestEvalReadsRawBody(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "p")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(`package deputy.authz

default decision := {"allowed": false, "reason": "no_title"}

decision := {"allowed": true, "reason": "titled"} if input.parsed_body.title == ["cat"]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	upload := "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\ncat\r\n" +
		"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n\xff\xfe\r\n--XyZ--\r\n"
	check := func(field string, value any) string {
		http := map[string]any{"method": "POST", "path": "/upload", field: value,
			"headers": map[string]string{"content-type": "multipart/form-data; boundary=XyZ"}}
		b, err := json.Marshal(map[string]any{"attributes": map[string]any{"request": map[string]any{"http": http}}})
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	textUpload := strings.Replace(upload, "\x89PNG\r\n\x1a\n\xff\xfe", "PNG", 1)
	for name, input := range map[string]string{
		"body":              check("body", textUpload),
		"rawBody":           check("rawBody", base64.StdEncoding.EncodeToString([]byte(textUpload))),
		"rawBody not UTF-8": check("rawBody", base64.StdEncoding.EncodeToString([]byte(upload))),
	} {
		t.Run(name, func(t *testing.T) {
			out, err := runEvalOn(t, dir, "", "--input", input)
			if err != nil {
				t.Fatalf("eval: %v\n%s", err, out)
			}
			if !strings.Contains(out, "decision: allow") || !strings.Contains(out, "reason:   titled") {
				t.Errorf("want allowed as titled:\n%s", out)
			}
		})
	}
}
