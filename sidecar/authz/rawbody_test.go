package authz_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/authz"
)

// echoBodyPolicy allows every request, its reason what policy was given
// of the body: parsed_body, truncated_body and the methods it may run as.
const echoBodyPolicy = `package t

decision := {"allowed": true, "reason": json.marshal({
	"parsed_body": object.get(input, "parsed_body", "absent"),
	"truncated_body": object.get(input, "truncated_body", "absent"),
	"methods": input.deputy.request.methods,
})}
`

// A body in raw_body (Envoy's pack_as_bytes, and any body that is not
// UTF-8) is read exactly as the same bytes in body: parsed, refused, cut
// short and looked through for method overrides alike, so which field
// Envoy fills never changes a decision. A body that is not UTF-8 cannot
// get past a rule by being so: a JSON body holding an invalid byte is
// refused, a compressed one is not read (decided as every method a body
// override may name), and a multipart upload is decided on its fields.
func TestRawBodyReadAsBody(t *testing.T) {
	ctx := context.Background()
	const multi = "multipart/form-data; boundary=XyZ"
	upload := "--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n" +
		"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n\xff\xfe\r\n--XyZ--\r\n"
	const every = `["POST","GET","HEAD","PUT","PATCH","DELETE","OPTIONS"]`
	for _, tc := range []struct {
		name    string
		headers map[string]string
		body    string
		noParse bool   // check.parse_body off
		want    string // the reason of the allow, or "400" for a refusal
	}{
		{name: "JSON", headers: map[string]string{"content-type": "application/json"}, body: `{"query":"{ me { id } }","_method":"PUT"}`,
			want: `{"methods":["POST","PUT"],"parsed_body":{"_method":"PUT","query":"{ me { id } }"},"truncated_body":false}`},
		{name: "JSON with a byte that is not UTF-8", headers: map[string]string{"content-type": "application/json"}, body: "{\"_method\":\"DEL\xffETE\"}", want: "400"},
		{name: "JSON after a byte order mark", headers: map[string]string{"content-type": "application/json"}, body: "\xef\xbb\xbf{\"_method\":\"DELETE\"}", want: "400"},
		{name: "form after a byte order mark", headers: map[string]string{"content-type": "application/x-www-form-urlencoded"}, body: "\xef\xbb\xbf_method=DELETE", want: "400"},
		{name: "form after a byte order mark, parse_body off", headers: map[string]string{"content-type": "application/x-www-form-urlencoded"}, body: "\xef\xbb\xbf_method=DELETE", noParse: true,
			want: `{"methods":` + every + `,"parsed_body":"absent","truncated_body":"absent"}`},
		{name: "deflate form, parse_body off", headers: map[string]string{"content-type": "application/x-www-form-urlencoded", "content-encoding": "deflate"}, body: "x_method=DELETE", noParse: true,
			want: `{"methods":` + every + `,"parsed_body":"absent","truncated_body":"absent"}`},
		{name: "multipart after a byte order mark", headers: map[string]string{"content-type": multi}, body: "\xef\xbb\xbf" + upload, want: "400"},
		{name: "JSON after a UTF-16 byte order mark", headers: map[string]string{"content-type": "application/json"}, body: "\xff\xfe{\x00}\x00", want: "400"},
		{name: "form", headers: map[string]string{"content-type": "application/x-www-form-urlencoded"}, body: "a=1&_method=PATCH",
			want: `{"methods":["POST","PATCH"],"parsed_body":{"_method":["PATCH"],"a":["1"]},"truncated_body":false}`},
		{name: "multipart upload of a binary file", headers: map[string]string{"content-type": multi}, body: upload,
			want: `{"methods":["POST","DELETE"],"parsed_body":{"_method":["DELETE"],"file":["a.png"]},"truncated_body":false}`},
		{name: "gzip JSON", headers: map[string]string{"content-type": "application/json", "content-encoding": "gzip"}, body: "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff", want: "400"},
		{name: "deflate form", headers: map[string]string{"content-type": "application/x-www-form-urlencoded", "content-encoding": "deflate"}, body: "x_method=DELETE", want: "400"},
		{name: "gzip of a type not read", headers: map[string]string{"content-type": "application/octet-stream", "content-encoding": "gzip"}, body: "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff",
			want: `{"methods":["POST"],"parsed_body":null,"truncated_body":false}`},
		// Refused for every type frameworks read a body of (see
		// readingsOf), not only for those parse_body parses.
		{name: "gzip with no type", headers: map[string]string{"content-encoding": "gzip"}, body: "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff", want: "400"},
		{name: "gzip text/json", headers: map[string]string{"content-type": "text/json", "content-encoding": "gzip"}, body: "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff", want: "400"},
		{name: "gzip multipart/mixed", headers: map[string]string{"content-type": "multipart/mixed; boundary=b", "content-encoding": "gzip"}, body: "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff", want: "400"},
		{name: "gzip with no type, parse_body off", headers: map[string]string{"content-encoding": "gzip"}, body: "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff", noParse: true,
			want: `{"methods":` + every + `,"parsed_body":"absent","truncated_body":"absent"}`},
		{name: "gzip text/json, parse_body off", headers: map[string]string{"content-type": "text/json", "content-encoding": "gzip"}, body: "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff", noParse: true,
			want: `{"methods":` + every + `,"parsed_body":"absent","truncated_body":"absent"}`},
		{name: "binary of a type not read", headers: map[string]string{"content-type": "application/octet-stream"}, body: "\x00\xff\xfe",
			want: `{"methods":["POST"],"parsed_body":null,"truncated_body":false}`},
		{name: "cut short", headers: map[string]string{"content-type": "application/x-www-form-urlencoded", "content-length": "9999"}, body: "_method=DELETE\xff",
			want: `{"methods":` + every + `,"parsed_body":null,"truncated_body":true}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := authz.New(engineFor(t, "data.t.decision", echoBodyPolicy, nil), authz.WithQuery("data.t.decision"), authz.WithBodyParsing(!tc.noParse))
			var got [2]*authz.Response
			for i, field := range []string{"body", "raw_body"} {
				headers := map[string]string{"content-length": strconv.Itoa(len(tc.body))}
				for k, v := range tc.headers {
					headers[k] = v
				}
				req := checkRequest(t, httpRequest("POST", "/a", headers, ""))
				if field == "body" {
					req.Attributes.Request.Http.Body = tc.body // as sent, UTF-8 or not
				} else {
					req.Attributes.Request.Http.RawBody = []byte(tc.body)
				}
				got[i] = p.Check(ctx, req)
				r := got[i]
				switch {
				case tc.want == "400" && (r.Allowed || r.HTTPStatus != 400 || r.Reason != authz.ReasonMalformedRequest || !strings.HasPrefix(r.Body, "body: ")):
					t.Errorf("%s: allowed %v %d %s, want 400 %s", field, r.Allowed, r.HTTPStatus, r.Reason, authz.ReasonMalformedRequest)
				case tc.want != "400" && (!r.Allowed || r.Reason != tc.want):
					t.Errorf("%s: allowed %v (%d %s %s), want\n%s", field, r.Allowed, r.HTTPStatus, r.Reason, r.Body, tc.want)
				}
			}
			if got[0].Allowed != got[1].Allowed || got[0].HTTPStatus != got[1].HTTPStatus || got[0].Reason != got[1].Reason || got[0].Body != got[1].Body {
				t.Errorf("body: %v %d %s %q\nraw_body: %v %d %s %q", got[0].Allowed, got[0].HTTPStatus, got[0].Reason, got[0].Body,
					got[1].Allowed, got[1].HTTPStatus, got[1].Reason, got[1].Body)
			}
		})
	}
}
