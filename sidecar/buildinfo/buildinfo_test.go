package buildinfo

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestResolve(t *testing.T) {
	vcs := func(rev, modified string) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			return &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
				{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified},
			}}, true
		}
	}
	none := func() (*debug.BuildInfo, bool) { return nil, false }
	installed := func() (*debug.BuildInfo, bool) {
		return &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, true
	}
	cases := []struct {
		name, ver, rev string
		read           func() (*debug.BuildInfo, bool)
		want           Info
	}{
		{"linker stamps win", "v0.3.0", "abc123", vcs("fff", "true"), Info{"v0.3.0", "abc123", runtime.Version()}},
		{"toolchain vcs fallback", "", "", vcs("fff", "false"), Info{Unknown, "fff", runtime.Version()}},
		{"dirty tree is marked", "", "", vcs("fff", "true"), Info{Unknown, "fff-dirty", runtime.Version()}},
		{"go install version", "", "", installed, Info{"v1.2.3", Unknown, runtime.Version()}},
		{"nothing recorded", "", "", none, Info{Unknown, Unknown, runtime.Version()}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := resolve(tc.ver, tc.rev, tc.read); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	got := Info{"v1.0.0", "abc", "go1.26.0"}.String()
	if want := "deputy v1.0.0 (commit abc, go1.26.0)"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
