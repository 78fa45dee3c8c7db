package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/buildinfo"
)

func TestVersionFlagPrintsTheVersionLine(t *testing.T) {
	want := buildinfo.Get().String() + "\n"
	for _, args := range [][]string{{"--version"}, {"-v"}, {"version"}} {
		out, err := run(t, newRootCmd(), args...)
		if err != nil || out != want {
			t.Errorf("deputy %s = %q, %v; want %q", strings.Join(args, " "), out, err, want)
		}
	}
	out, err := run(t, newRootCmd())
	if err != nil || !strings.Contains(out, "Available Commands:") {
		t.Errorf("deputy with no arguments = %q, %v; want the help", out, err)
	}
	if _, err := run(t, newRootCmd(), "bogus"); err == nil || !strings.Contains(err.Error(), `unknown command "bogus"`) {
		t.Errorf("deputy bogus: %v, want unknown command", err)
	}
}

// The linker drops the methods nothing calls only while no reachable code
// looks a method up by name through reflection (text/template and
// html/template executing a template do: a cobra version or usage
// template, gRPC's x/net/trace pages). Once one can, it keeps every
// exported method of every reachable type: about 10 MB more text and
// tables, most of it resident in every sidecar. Built as the Makefile
// builds the binary.
func TestLinkerDropsUnusedMethods(t *testing.T) {
	cmd := exec.Command("go", "build", "-trimpath", "-tags", "grpcnotrace", "-ldflags=-dumpdep",
		"-o", filepath.Join(t.TempDir(), "deputy"), ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("go build: %v\n%.2000s", err, out.String())
	}
	// -dumpdep prints "from -> to" as the linker first reaches each symbol.
	from := map[string]string{}
	var found []string
	sc := bufio.NewScanner(&out)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		a, b, ok := strings.Cut(sc.Text(), " -> ")
		if !ok {
			continue
		}
		// Flags follow a symbol's name: " <UsedInIface><ReflectMethod>".
		a, _, _ = strings.Cut(a, " <")
		b, flags, _ := strings.Cut(b, " <")
		if _, seen := from[b]; !seen {
			from[b] = a
		}
		if strings.Contains(flags, "ReflectMethod>") {
			found = append(found, b)
		}
	}
	if len(found) == 0 {
		if len(from) == 0 {
			t.Fatalf("no dependency graph in the linker's output:\n%.2000s", out.String())
		}
		return
	}
	// The chain that reaches the first one says what to remove.
	var chain []string
	for s, n := found[0], 0; s != "" && s != "_" && n < 30; s, n = from[s], n+1 {
		chain = append(chain, s)
	}
	t.Fatalf("reachable methods looked up by name %v, reached through:\n  %s", found, strings.Join(chain, "\n  <- "))
}
