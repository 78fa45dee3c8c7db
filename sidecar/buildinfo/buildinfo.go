// Package buildinfo owns what a running Deputy says about its own build:
// version, commit and Go version. Release builds stamp version and commit
// with the linker (see the Makefile's LDFLAGS); a plain `go build` or
// `go install` falls back to what the Go toolchain recorded in the binary.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Set by the linker: -X github.com/deputyhq/deputy/sidecar/buildinfo.version=...
var (
	version string
	commit  string
)

// Unknown stands for a value neither the linker nor the toolchain recorded.
const Unknown = "unknown"

// Info describes one build.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
}

// Get returns this binary's build info.
func Get() Info {
	return resolve(version, commit, debug.ReadBuildInfo)
}

func resolve(ver, rev string, read func() (*debug.BuildInfo, bool)) Info {
	info := Info{Version: ver, Commit: rev, GoVersion: runtime.Version()}
	if bi, ok := read(); ok {
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version // go install module@version
		}
		if info.Commit == "" {
			var dirty bool
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					info.Commit = s.Value
				case "vcs.modified":
					dirty = s.Value == "true"
				}
			}
			if info.Commit != "" && dirty {
				info.Commit += "-dirty"
			}
		}
	}
	if info.Version == "" {
		info.Version = Unknown
	}
	if info.Commit == "" {
		info.Commit = Unknown
	}
	return info
}

// String is the one-line form `deputy version` prints.
func (i Info) String() string {
	return "deputy " + i.Version + " (commit " + i.Commit + ", " + i.GoVersion + ")"
}
