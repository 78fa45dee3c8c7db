package main

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestReadOnlyMapping(t *testing.T) {
	const exe = "/usr/bin/deputy"
	for _, tc := range []struct {
		name, line string
		ok         bool
	}{
		{"code", "00400000-01116000 r-xp 00000000 00:2d 123 /usr/bin/deputy", true},
		{"tables", "01116000-02460000 r--p 00d16000 00:2d 123 /usr/bin/deputy", true},
		{"data is writable", "02460000-025cc000 rw-p 02060000 00:2d 123 /usr/bin/deputy", false},
		{"another file", "7f0000000000-7f0000001000 r--p 00000000 00:2d 9 /usr/lib/x.so", false},
		{"anonymous", "c000000000-c004000000 rw-p 00000000 00:00 0", false},
		{"no address", "r-xp 00000000 00:2d 123 /usr/bin/deputy x", false},
		{"reversed range", "01116000-00400000 r-xp 00000000 00:2d 123 /usr/bin/deputy", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, ok := readOnlyMapping(tc.line, exe); ok != tc.ok {
				t.Errorf("readOnlyMapping(%q) ok = %v, want %v", tc.line, ok, tc.ok)
			}
		})
	}
}

// After the release, less of the binary's read-only mappings is
// resident, and the process goes on running code and reading tables
// from them.
func TestReleaseStartupPages(t *testing.T) {
	before := residentReadOnlyKB(t)
	if before == 0 {
		t.Fatal("no resident read-only page of the test binary")
	}
	if err := releaseStartupPages(); err != nil {
		t.Fatal(err)
	}
	after := residentReadOnlyKB(t)
	if after >= before {
		t.Fatalf("resident read-only pages: %d kB after, %d kB before", after, before)
	}
	t.Logf("resident read-only pages: %d kB → %d kB", before, after)
}

func residentReadOnlyKB(t *testing.T) int {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	total, in := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if fields := strings.Fields(line); len(fields) > 0 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			_, _, in = readOnlyMapping(line, exe)
			continue
		}
		if v, ok := strings.CutPrefix(line, "Rss:"); in && ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			total += kb
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return total
}
