package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// sample is what one run of one scenario measured.
type sample struct {
	rps        float64
	p50, p99   time.Duration
	count      int
	errors     int
	errorCodes []string
	cpuUS      float64 // server CPU time per check, µs
	loadCPUUS  float64 // the load tool's own CPU time per check, µs
	rssMB      float64 // largest resident set sampled during the run
	anonMB     float64 // of that sample, anonymous memory (heap, stacks)
	fileMB     float64 // of that sample, file-backed pages (the binary's)
	trips      float64 // Redis commands per check, when counted
	hasTrips   bool
}

// median is the per-figure median over the rounds; errors are summed.
func (s *scenario) median() sample {
	pick := func(f func(sample) float64) float64 {
		v := make([]float64, len(s.samples))
		for i, r := range s.samples {
			v[i] = f(r)
		}
		return median(v)
	}
	m := sample{
		rps:   pick(func(r sample) float64 { return r.rps }),
		p50:   time.Duration(pick(func(r sample) float64 { return float64(r.p50) })),
		p99:   time.Duration(pick(func(r sample) float64 { return float64(r.p99) })),
		cpuUS: pick(func(r sample) float64 { return r.cpuUS }),
		loadCPUUS: pick(func(r sample) float64 {
			return r.loadCPUUS
		}),
		rssMB:  pick(func(r sample) float64 { return r.rssMB }),
		anonMB: pick(func(r sample) float64 { return r.anonMB }),
		fileMB: pick(func(r sample) float64 { return r.fileMB }),
		trips:  pick(func(r sample) float64 { return r.trips }),
	}
	for _, r := range s.samples {
		m.count += r.count
		m.errors += r.errors
		m.errorCodes = append(m.errorCodes, r.errorCodes...)
		m.hasTrips = m.hasTrips || r.hasTrips
	}
	return m
}

// measure drives s's server with ghz for one run and reads the server's
// CPU time and RSS around it.
func measure(o options, s *scenario) (sample, error) {
	pid := s.srv.cmd.Process.Pid
	cpu0, err := cpuTime(pid)
	if err != nil {
		return sample{}, err
	}
	var calls0 int64
	if s.redis != nil {
		if calls0, err = s.redis.calls(); err != nil {
			return sample{}, err
		}
	}
	stopRSS := sampleRSS(pid)
	r, err := ghz(o, s.name, s.srv.grpc, s.payload)
	peak := stopRSS()
	if err != nil {
		return sample{}, err
	}
	cpu1, err := cpuTime(pid)
	if err != nil {
		return sample{}, err
	}
	if r.count > 0 {
		r.cpuUS = float64((cpu1 - cpu0).Microseconds()) / float64(r.count)
	}
	r.rssMB, r.anonMB, r.fileMB = float64(peak.total)/(1<<20), float64(peak.anon)/(1<<20), float64(peak.file)/(1<<20)
	if s.redis != nil && r.count > 0 {
		calls1, err := s.redis.calls()
		if err != nil {
			return sample{}, err
		}
		// One command is the first INFO call itself.
		r.trips, r.hasTrips = float64(calls1-calls0-1)/float64(r.count), true
	}
	return r, nil
}

// userHZ is the unit of /proc/<pid>/stat's utime and stime (USER_HZ, 100
// on every Linux architecture).
const userHZ = 100

// cpuTime is the CPU time (user + system) pid has used so far.
func cpuTime(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; fields count from after its ')'.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	// Fields 14 and 15 of stat(5); f[0] is field 3.
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return time.Duration(utime+stime) * time.Second / userHZ, nil
}

// resident is a process's resident set: in all, and the part of it that
// is anonymous memory (heap, stacks: what the process's own allocations
// hold) and that is file-backed (the pages of its binary it has touched,
// which the kernel may drop and read again).
type resident struct{ total, anon, file int64 }

// rssBytes is pid's resident set now, from /proc/<pid>/status.
func rssBytes(pid int) (resident, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return resident{}, err
	}
	var r resident
	fields := map[string]*int64{"VmRSS:": &r.total, "RssAnon:": &r.anon, "RssFile:": &r.file}
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		for prefix, dst := range fields {
			if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
				kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				if err != nil {
					return resident{}, fmt.Errorf("/proc/%d/status: %s %w", pid, prefix, err)
				}
				*dst = kb << 10
				seen++
			}
		}
	}
	if seen != len(fields) {
		return resident{}, fmt.Errorf("/proc/%d/status: no VmRSS, RssAnon and RssFile", pid)
	}
	return r, nil
}

// sampleRSS samples pid's resident set until the returned stop is called,
// which returns the largest sample (by its total).
func sampleRSS(pid int) (stop func() resident) {
	done := make(chan struct{})
	peak := make(chan resident, 1)
	go func() {
		var m resident
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := rssBytes(pid); err == nil && v.total > m.total {
				m = v
			}
			select {
			case <-done:
				peak <- m
				return
			case <-t.C:
			}
		}
	}()
	return func() resident { close(done); return <-peak }
}

// writePayload writes a CheckRequest as a browser page view with 15
// headers, plus extra ones.
// requestNumber in a payload is ghz's number of the request: every check
// sends its own value there (the preflight sends 0).
const requestNumber = "{{.RequestNumber}}"

func writePayload(dir, name string, extra map[string]string, path ...string) string {
	p := "/catalog/shoes?size=42&color=red"
	if len(path) > 0 {
		p = path[0]
	}
	headers := map[string]string{
		":authority": "shop.example.com", ":method": "GET", ":path": p, ":scheme": "https",
		"accept": "text/html,application/xhtml+xml", "accept-encoding": "gzip, deflate, br", "accept-language": "en-GB,en;q=0.9",
		"user-agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0", "x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https",
		"x-request-id": "8f4c1e2a-6b1d-4c3e-9a57-3f0e2d1c4b5a", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"sec-fetch-mode": "navigate", "x-envoy-expected-rq-timeout-ms": "15000", "cookie": "cart=abc123",
	}
	for k, v := range extra {
		headers[k] = v
	}
	req := map[string]any{"attributes": map[string]any{
		"source":  map[string]any{"address": map[string]any{"socketAddress": map[string]any{"address": "10.0.3.17", "portValue": 51234}}},
		"request": map[string]any{"http": map[string]any{"method": "GET", "path": p, "host": "shop.example.com", "scheme": "https", "protocol": "HTTP/2", "headers": headers}},
	}}
	raw, _ := json.Marshal(req)
	file := filepath.Join(dir, name)
	_ = os.WriteFile(file, raw, 0o600)
	return file
}

// writeProtoset writes the ext_authz service's descriptors, with every file
// they import, as a FileDescriptorSet for ghz, so the servers are measured
// as deployed: without gRPC reflection, which Deputy leaves off by default
// and which holds descriptors of its own in the server's heap.
//
// Unless decodeAnswers, the set describes CheckResponse by its status
// alone, so ghz keeps the rest of an answer (headers, dynamic metadata) as
// unread bytes. ghz decodes into reflective dynamic messages: Deputy's
// reseller answer (773 bytes: six headers, the actor token, a decision
// id) costs it about 27 µs and 111 allocations a check, an empty allow
// 2.7 µs, and Go's generated decoder 4.7 µs and 41 (status alone: 2.7
// µs). On two shared cores that cost competes with the server and would
// be charged to whichever server answers more; what is left uncharged is
// at most a generated decoder's few µs. The
// answers themselves are read in full, with generated code, by the check
// before and after every run (preflight).
func writeProtoset(dir string, decodeAnswers bool) (string, error) {
	var set descriptorpb.FileDescriptorSet
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := range imports.Len() {
			add(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	add(authv3.File_envoy_service_auth_v3_external_auth_proto)
	if !decodeAnswers {
		if err := statusOnly(&set); err != nil {
			return "", err
		}
	}
	raw, err := proto.Marshal(&set)
	if err != nil {
		return "", err
	}
	file := filepath.Join(dir, "ext_authz.protoset")
	return file, os.WriteFile(file, raw, 0o600)
}

// statusOnly leaves CheckResponse in set with its status field alone.
func statusOnly(set *descriptorpb.FileDescriptorSet) error {
	resp := authv3.File_envoy_service_auth_v3_external_auth_proto.Messages().ByName("CheckResponse")
	for _, f := range set.File {
		if f.GetName() != resp.ParentFile().Path() {
			continue
		}
		for _, m := range f.MessageType {
			if m.GetName() != string(resp.Name()) {
				continue
			}
			m.Field = slices.DeleteFunc(m.Field, func(fd *descriptorpb.FieldDescriptorProto) bool { return fd.GetName() != "status" })
			m.OneofDecl = nil
			if len(m.Field) != 1 {
				return fmt.Errorf("CheckResponse has no status field")
			}
			return nil
		}
	}
	return fmt.Errorf("CheckResponse not found in %s", resp.ParentFile().Path())
}

func ghz(o options, name, addr, payload string) (sample, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.duration+60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.ghz, "--insecure", "--protoset", o.protoset, "--call", "envoy.service.auth.v3.Authorization.Check",
		"-D", payload, "-c", strconv.Itoa(o.concurrency), "--connections", strconv.Itoa(o.connections),
		"-z", o.duration.String(), "-O", "json", addr)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return sample{}, fmt.Errorf("ghz %s: %v: %s", name, err, stderr.String())
	}
	var rep struct {
		Count   int     `json:"count"`
		RPS     float64 `json:"rps"`
		Latency []struct {
			Percentage int   `json:"percentage"`
			Latency    int64 `json:"latency"`
		} `json:"latencyDistribution"`
		Errors map[string]int `json:"errorDistribution"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return sample{}, fmt.Errorf("ghz %s: report: %v", name, err)
	}
	r := sample{rps: rep.RPS, count: rep.Count}
	if rep.Count > 0 {
		// ghz shares the machine's cores with the server: its cost per
		// call, which grows with the request and the answer, bounds the
		// throughput any server can reach.
		used := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		r.loadCPUUS = float64(used.Microseconds()) / float64(rep.Count)
	}
	cutOff := 0
	for msg, n := range rep.Errors {
		// When the run's time is up, ghz closes its connections under the
		// calls still in flight: at most one per stream ends so.
		if strings.Contains(msg, "code = Canceled") || strings.Contains(msg, "use of closed network connection") ||
			strings.Contains(msg, "transport is closing") {
			cutOff += n
			continue
		}
		r.errors += n
		r.errorCodes = append(r.errorCodes, fmt.Sprintf("%d× %s", n, msg))
	}
	if cutOff > o.concurrency {
		r.errors += cutOff
		r.errorCodes = append(r.errorCodes, fmt.Sprintf("%d calls cut off, more than one per stream", cutOff))
	}
	for _, l := range rep.Latency {
		switch l.Percentage {
		case 50:
			r.p50 = time.Duration(l.Latency)
		case 99:
			r.p99 = time.Duration(l.Latency)
		}
	}
	return r, nil
}

// preflight sends the payload once over gRPC and fails unless it is
// allowed and, when header is set, that header is injected upstream. It
// returns the answer.
// readRequest reads a scenario's payload as the request ghz sends first:
// request number 0.
func readRequest(payload string) (*authv3.CheckRequest, error) {
	raw, err := os.ReadFile(payload)
	if err != nil {
		return nil, err
	}
	raw = bytes.ReplaceAll(raw, []byte(requestNumber), []byte("0"))
	var req authv3.CheckRequest
	if err := protojson.Unmarshal(raw, &req); err != nil {
		return nil, fmt.Errorf("payload %s: %w", payload, err)
	}
	return &req, nil
}

func preflight(addr, payload, header string) (*authv3.CheckResponse, error) {
	req, err := readRequest(payload)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	if code := resp.GetStatus().GetCode(); code != 0 {
		return nil, fmt.Errorf("check denied (code %d): %s", code, resp.GetDeniedResponse().GetBody())
	}
	if header != "" && !slices.ContainsFunc(resp.GetOkResponse().GetHeaders(), func(h *corev3.HeaderValueOption) bool {
		return strings.EqualFold(h.GetHeader().GetKey(), header)
	}) {
		return nil, fmt.Errorf("check allowed without injecting %s", header)
	}
	return resp, nil
}
