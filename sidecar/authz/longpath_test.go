package authz_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/logtest"
)

// A check whose path has thousands of segments (5.8 KB for 2,900, within
// nginx's 8 KB request line), let through by a raised
// check.max_path_segments and check.max_route_dirs_bytes, is logged like any other: its input holds
// route_dirs, the route from each segment on, which the decision log once
// weighed at the square of the path and dropped whole past
// max_queue_bytes (8 MiB), leaving an allowed request without a record.
func TestLongPathDecisionIsLogged(t *testing.T) {
	var out logtest.Lines
	cfg := decisionlog.Defaults()
	cfg.Sink = decisionlog.SinkStdout
	l, err := decisionlog.New(cfg, decisionlog.NewWriterSink(&out), decisionlog.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	p := shippedPipeline(t, authz.WithDecisionLogger(l), authz.WithDecisionInput(true), authz.WithMaxPathSegments(3000), authz.WithMaxRouteDirsBytes(10<<20))
	segments := []int{2000, 2900}
	for _, n := range segments {
		// Upstreams such as Magento read the extra segments as key/value
		// parameters and act on such a path.
		req := withHeaders(t, "/catalog/"+strings.Repeat("a/", n), nil)
		if resp := p.Check(context.Background(), req); !resp.Allowed {
			t.Fatalf("%d segments: want allowed (a public page), got %s", n, resp.Reason)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	recs := out.Records(t)
	if len(recs) != len(segments) || l.Dropped() != 0 {
		t.Fatalf("%d allowed checks left %d decision records, %d dropped", len(segments), len(recs), l.Dropped())
	}
	for i, r := range recs {
		if r["result"] != "allow" || !strings.HasPrefix(r["path"].(string), "/catalog/a/a/") {
			t.Errorf("record %d = %v %v, want the allowed long path", i, r["result"], r["path"])
		}
	}
}

// pathBoundCase is a public page's check on a path near a bound: let
// through, or refused naming the bound.
type pathBoundCase struct {
	name    string
	path    string
	opts    []authz.Option
	refused bool
	bound   int // the bound a refusal names
}

// testPathBound runs cases whose refusals are 400 malformed_request with
// a body starting refusal (formatted with the bound), logged naming
// setting.
func testPathBound(t *testing.T, setting, refusal string, cases []pathBoundCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logged := &logSink{}
			p := shippedPipeline(t, append([]authz.Option{authz.WithDecisionLogger(logged)}, tc.opts...)...)
			resp := p.Check(context.Background(), withHeaders(t, tc.path, nil))
			if !tc.refused {
				if !resp.Allowed {
					t.Fatalf("denied %s (%s), want a public page allowed", resp.Reason, resp.Body)
				}
				return
			}
			want := fmt.Sprintf(refusal, tc.bound)
			if resp.Allowed || resp.HTTPStatus != http.StatusBadRequest || resp.Reason != authz.ReasonMalformedRequest || !strings.HasPrefix(resp.Body, want) {
				t.Fatalf("allowed %v, status %d, reason %s, body %q; want 400 %s starting %q", resp.Allowed, resp.HTTPStatus, resp.Reason, resp.Body, authz.ReasonMalformedRequest, want)
			}
			if len(logged.got) != 1 || logged.got[0].Reason != authz.ReasonMalformedRequest || !strings.Contains(logged.got[0].Error, setting) {
				t.Errorf("decisions logged %v; want the refusal, naming %s", logged.got, setting)
			}
		})
	}
}

// A path of more segments than check.max_path_segments is refused as
// malformed before the input is built: route_dirs, the route from each
// segment on, makes what a check builds and hashes grow with segments
// times length (30,000 one-letter segments, within Envoy's 60 KiB of
// headers, cost 71 ms a check). No storefront route comes near the bound,
// and repeated slashes, merged, are no segments.
func TestPathSegmentBound(t *testing.T) {
	const bound = authz.DefaultMaxPathSegments
	testPathBound(t, "check.max_path_segments", "path: more segments than check.max_path_segments (%d) allows", []pathBoundCase{
		{name: "at the default bound", path: "/catalog" + strings.Repeat("/a", bound-1)},
		{name: "one past the default bound", path: "/catalog" + strings.Repeat("/a", bound), refused: true, bound: bound},
		{name: "thirty thousand segments", path: "/catalog" + strings.Repeat("/a", 30000), refused: true, bound: bound},
		{name: "repeated slashes are no segments", path: "/catalog" + strings.Repeat("/", 10*bound) + "a/"},
		{name: "a lower bound", path: "/catalog/a/b/c", opts: []authz.Option{authz.WithMaxPathSegments(3)}, refused: true, bound: 3},
		{name: "a raised bound", path: "/catalog" + strings.Repeat("/a", 2*bound), opts: []authz.Option{authz.WithMaxPathSegments(4 * bound), authz.WithMaxRouteDirsBytes(1 << 20)}},
	})
}

// A path within check.max_path_segments whose route_dirs, the path from
// each segment on, would hold more than check.max_route_dirs_bytes is
// refused as malformed before the input is built: long segments weigh
// segments times length (128 segments in Envoy's 60 KiB of headers make
// 3.8 MB of route_dirs). The longest storefront paths hold a few KB.
func TestRouteDirsBound(t *testing.T) {
	const bound = authz.DefaultMaxRouteDirsBytes
	testPathBound(t, "check.max_route_dirs_bytes", "path: longer than check.max_route_dirs_bytes (%d) allows", []pathBoundCase{
		{name: "the default segment bound of one-letter segments", path: "/catalog" + strings.Repeat("/a", authz.DefaultMaxPathSegments-1)},
		{name: "a 255-byte URL key under three categories", path: "/catalog/women/tops-women/jackets-women/" + strings.Repeat("x", 250) + ".html"},
		{name: "key/value parameters with a uenc of a 2,000-byte page URL", path: "/catalog/product_compare/add/product/42/form_key/Xr4nD0mF0rmK3y12/uenc/" +
			strings.Repeat("aHR0cHM6Ly9zaG9wLmV4YW1wbGUuY29tL3dvbWVuLmh0bWw_", 55) + ",,/"},
		{name: "an encoded search term of 1 KB", path: "/catalog/search/" + strings.Repeat("red%20leather%20boots%20", 40)},
		{name: "128 segments of 62 bytes", path: "/catalog" + strings.Repeat("/"+strings.Repeat("a", 62), authz.DefaultMaxPathSegments-1), refused: true, bound: bound},
		{name: "8 segments of 4 KiB", path: strings.Repeat("/"+strings.Repeat("a", 4<<10), 8), refused: true, bound: bound},
		{name: "a lower bound", path: "/catalog/a/b/c", opts: []authz.Option{authz.WithMaxRouteDirsBytes(20)}, refused: true, bound: 20},
		{name: "a raised bound", path: "/catalog" + strings.Repeat("/"+strings.Repeat("a", 62), 127), opts: []authz.Option{authz.WithMaxRouteDirsBytes(1 << 20)}},
	})
}

// longPathCases are paths a client made long: as many segments as
// check.max_path_segments lets through, each as long as a proxy lets it
// be (nginx's 8 KB request line, Envoy's 60 KiB of headers), the most
// route_dirs bytes check.max_route_dirs_bytes lets through, and far more
// segments. Deputy refuses those past a bound before it builds the input.
var longPathCases = []struct {
	segments, segLen int
	allowed          bool
}{
	{authz.DefaultMaxPathSegments, 1, true},
	{authz.DefaultMaxPathSegments, 2, true},
	{authz.DefaultMaxPathSegments, 62, false},
	{authz.DefaultMaxPathSegments, 465, false},
	{30000, 1, false},
}

// BenchmarkCheckLongPath is an impersonated check on a path a client made
// long (longPathCases).
func BenchmarkCheckLongPath(b *testing.B) {
	p, token := impersonationPipeline(b, time.Now())
	benchLongPaths(b, p, map[string]string{"cookie": "cart=abc123; deputy_session=" + token})
}

// BenchmarkCheckLongPathAnonymous is an anonymous check of a public page
// on a path a client made long (longPathCases): compare with
// BenchmarkCheck/public.
func BenchmarkCheckLongPathAnonymous(b *testing.B) {
	benchLongPaths(b, shippedPipeline(b), nil)
}

func benchLongPaths(b *testing.B, p *authz.Pipeline, headers map[string]string) {
	for _, tc := range longPathCases {
		path := "/catalog" + strings.Repeat("/"+strings.Repeat("a", tc.segLen), tc.segments-1)
		b.Run(fmt.Sprintf("segments=%d/bytes=%d", tc.segments, len(path)), func(b *testing.B) {
			benchCheck(b, p, withHeaders(b, path, headers), tc.allowed)
		})
	}
}
