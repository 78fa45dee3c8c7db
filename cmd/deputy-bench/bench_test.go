package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestReadInProcess(t *testing.T) {
	out := `goos: linux
BenchmarkCheckFloor-2       	     300	     10052 ns/op	    3576 B/op	      49 allocs/op
BenchmarkCheckFloor-2       	     300	      8459 ns/op	    3576 B/op	      49 allocs/op
BenchmarkCheckFloor-2       	     300	      9000 ns/op	    3576 B/op	      51 allocs/op
BenchmarkCheck/public-2     	     300	     20000.5 ns/op	    9925 B/op	     198 allocs/op
BenchmarkCheckDelegated/reseller     	     300	     45273 ns/op
PASS
`
	path := filepath.Join(t.TempDir(), "bench.txt")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readInProcess(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]benchFigure{
		"BenchmarkCheckFloor":              {ns: 9000, allocs: 49},
		"BenchmarkCheck/public":            {ns: 20000.5, allocs: 198},
		"BenchmarkCheckDelegated/reseller": {ns: 45273},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for n, w := range want {
		if got[n] != w {
			t.Errorf("%s = %+v, want %+v", n, got[n], w)
		}
	}
}

// cpuTime reads this process's own CPU time, which grows as it works.
func TestCPUTime(t *testing.T) {
	pid := os.Getpid()
	before, err := cpuTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		for range 1_000_000 {
			x++
		}
		after, err := cpuTime(pid)
		if err != nil {
			t.Fatal(err)
		}
		if after > before {
			if rss, err := rssBytes(pid); err != nil || rss.total <= 0 || rss.anon <= 0 || rss.file <= 0 || rss.anon+rss.file > rss.total {
				t.Fatalf("rss = %+v, %v; want a total, and anonymous and file-backed parts within it", rss, err)
			}
			return
		}
	}
	t.Fatalf("CPU time stayed at %v over 10s of work (%d loops)", before, x)
}

func TestProfileName(t *testing.T) {
	for in, want := range map[string]string{
		"deputy public page":                             "deputy-public-page.pprof",
		"deputy, OPA-Envoy-style JWT decode + headers":   "deputy-opa-envoy-style-jwt-decode-headers.pprof",
		"deputy impersonation, Redis, decision log none": "deputy-impersonation-redis-decision-log-none.pprof",
	} {
		if got := profileName(in); got != want {
			t.Errorf("profileName(%q) = %q, want %q", in, got, want)
		}
	}
}

// The RSS goal is on the largest Deputy process of the shipped load; a
// scenario apart (a new page every check) is printed beside it, and the
// do-nothing server never counts.
func TestReportRSSGoal(t *testing.T) {
	var r report
	r.add(row{name: "do-nothing", m: sample{rssMB: 90}}, false, false)
	r.add(row{name: "deputy impersonation", m: sample{rssMB: 43}}, true, false)
	r.add(row{name: "deputy partner", m: sample{rssMB: 41}}, true, false)
	r.add(row{name: "deputy a new page every check", m: sample{rssMB: 51}}, true, true)
	var out strings.Builder
	r.print(&out, options{})
	lines := map[string]string{} // the goal lines by their first column
	for _, l := range strings.Split(out.String(), "\n") {
		if goal, rest, ok := strings.Cut(l, "  "); ok && strings.HasPrefix(goal, "RSS") {
			lines[goal] = strings.Join(strings.Fields(rest), " ")
		}
	}
	if got := lines["RSS under load, largest Deputy process"]; !strings.HasPrefix(got, "43.0 MB ≤ 48 MB yes deputy impersonation:") {
		t.Errorf("RSS goal: %q", got)
	}
	if got := lines["RSS, deputy a new page every check (not the goal's load)"]; !strings.HasPrefix(got, "51.0 MB - -") {
		t.Errorf("scenario apart: %q", got)
	}
	if len(lines) != 2 {
		t.Errorf("RSS lines %q, want the goal and the scenario apart", lines)
	}
	if len(r.rows) != 4 {
		t.Fatalf("%d rows printed, want all 4", len(r.rows))
	}
}

// The preflight sends a scenario's templated payload as ghz's request
// number 0, so a templated path is checked as a real one.
func TestReadRequestFillsTheRequestNumber(t *testing.T) {
	p := writePayload(t.TempDir(), "p.json", nil, "/customer/account/orders/"+requestNumber)
	req, err := readRequest(p)
	if err != nil {
		t.Fatal(err)
	}
	http := req.GetAttributes().GetRequest().GetHttp()
	if http.GetPath() != "/customer/account/orders/0" || http.GetHeaders()[":path"] != "/customer/account/orders/0" {
		t.Fatalf("path %q, :path %q; want /customer/account/orders/0", http.GetPath(), http.GetHeaders()[":path"])
	}
}

// A throughput goal shows its ratio round by round beside the median, so
// a miss within the host's noise reads as one.
func TestReportThroughputRounds(t *testing.T) {
	deputy := []sample{{rps: 700}, {rps: 800}, {rps: 760}}
	floor := []sample{{rps: 1000}, {rps: 1000}, {rps: 1000}}
	r := report{throughput: []throughputGoal{{name: "reseller", m: sample{rps: 760}, floor: sample{rps: 1000}, goal: 0.75,
		rounds: roundRatios(deputy, floor)}}}
	var out strings.Builder
	r.print(&out, options{})
	var line string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(l, "throughput vs do-nothing, reseller") {
			line = strings.Join(strings.Fields(l), " ")
		}
	}
	if want := "0.76 ≥ 0.75 yes 760 vs 1000 checks/s (same request); by round 0.70, 0.80, 0.76"; !strings.Contains(line, want) {
		t.Fatalf("goal line %q, want %q in it", line, want)
	}
	if got := roundRatios(deputy, floor[:1]); len(got) != 1 {
		t.Fatalf("ratios of rounds with no floor: %v", got)
	}
}

// The load tool is given CheckResponse by its status alone, and the rest
// of the service as generated: it builds every request from the full
// CheckRequest, and an answer it reads keeps its status while the rest
// stays unread bytes.
func TestProtosetReadsTheAnswerStatusOnly(t *testing.T) {
	answer := &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: 7},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-deputy-subject", Value: "acme"}}},
		}},
		DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{"decision_id": structpb.NewStringValue("d1")}},
	}
	raw, err := proto.Marshal(answer)
	if err != nil {
		t.Fatal(err)
	}
	for _, full := range []bool{false, true} {
		files := loadProtoset(t, full)
		req, err := files.FindDescriptorByName("envoy.service.auth.v3.CheckRequest")
		if err != nil {
			t.Fatal(err)
		}
		want := protodesc.ToDescriptorProto((&authv3.CheckRequest{}).ProtoReflect().Descriptor())
		if got := protodesc.ToDescriptorProto(req.(protoreflect.MessageDescriptor)); !proto.Equal(got, want) {
			t.Errorf("decode answers %v: CheckRequest differs from the generated one", full)
		}
		d, err := files.FindDescriptorByName("envoy.service.auth.v3.CheckResponse")
		if err != nil {
			t.Fatal(err)
		}
		md := d.(protoreflect.MessageDescriptor)
		all := (&authv3.CheckResponse{}).ProtoReflect().Descriptor().Fields().Len()
		if n := md.Fields().Len(); full && n != all || !full && n != 1 {
			t.Errorf("decode answers %v: CheckResponse has %d fields", full, n)
		}
		m := dynamicpb.NewMessage(md)
		if err := proto.Unmarshal(raw, m); err != nil {
			t.Fatal(err)
		}
		status := m.Get(md.Fields().ByName("status")).Message()
		if code := status.Get(status.Descriptor().Fields().ByName("code")).Int(); code != 7 {
			t.Errorf("decode answers %v: status code %d, want 7", full, code)
		}
		if unread := len(m.GetUnknown()); full != (unread == 0) {
			t.Errorf("decode answers %v: %d bytes left unread", full, unread)
		}
		// Nothing of the answer is lost, only left undecoded.
		back, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var got authv3.CheckResponse
		if err := proto.Unmarshal(back, &got); err != nil || !proto.Equal(&got, answer) {
			t.Errorf("decode answers %v: answer read back as %v (%v)", full, &got, err)
		}
	}
}

func loadProtoset(t *testing.T, decodeAnswers bool) *protoregistry.Files {
	t.Helper()
	file, err := writeProtoset(t.TempDir(), decodeAnswers)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(raw, &set); err != nil {
		t.Fatal(err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		t.Fatal(err)
	}
	return files
}
