package main

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// releaseStartupPages unmaps, once start-up is done, the pages of the
// binary's read-only mappings (code, tables, the function metadata the
// runtime reads) that this process has touched so far. Start-up runs code
// that a check never runs again (configuration, policy compilation,
// OPA's and the protobuf registries' set-up), and the kernel maps 64 KiB
// around every page it faults in: some 5 MB of resident set that is only
// ever read once. The pages stay in the page cache, shared and clean; what
// serving runs next is mapped back at its first touch, as the kernel would
// after reclaiming them under memory pressure. Writable mappings (data,
// bss) are never touched: their pages may hold state. Nor is a read-only
// mapping with pages of its own (smaps' Anonymous): a position-independent
// build's RELRO (type descriptors, itabs) is relocated by the loader and
// then made read-only, and dropping those copies would bring back the
// file's unrelocated pointers.
func releaseStartupPages() error {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return err
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return err
	}
	defer f.Close()
	type span struct{ start, end uintptr }
	var spans []span
	var cur *span
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if start, end, ok := readOnlyMapping(line, exe); ok {
			spans = append(spans, span{start, end})
			cur = &spans[len(spans)-1]
			continue
		}
		if fs := strings.Fields(line); len(fs) > 0 && strings.Contains(fs[0], "-") && !strings.HasSuffix(fs[0], ":") {
			cur = nil
			continue
		}
		// A mapping's lines after its header: skip it if any of its pages
		// is a private copy, no longer the file's.
		if v, ok := strings.CutPrefix(line, "Anonymous:"); ok && cur != nil && strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")) != "0" {
			cur.end = cur.start
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	for _, m := range spans {
		if m.end == m.start {
			continue
		}
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, m.start, m.end-m.start, syscall.MADV_DONTNEED); errno != 0 {
			return errno
		}
	}
	return nil
}

// readOnlyMapping parses one header line of /proc/self/smaps (a line of
// /proc/self/maps) and reports the range
// of a mapping of file exe that cannot be written.
func readOnlyMapping(line, exe string) (start, end uintptr, ok bool) {
	// address perms offset dev inode path
	f := strings.Fields(line)
	if len(f) != 6 || f[5] != exe || len(f[1]) != 4 || f[1][0] != 'r' || f[1][1] != '-' {
		return 0, 0, false
	}
	lo, hi, found := strings.Cut(f[0], "-")
	if !found {
		return 0, 0, false
	}
	a, err1 := strconv.ParseUint(lo, 16, 64)
	b, err2 := strconv.ParseUint(hi, 16, 64)
	if err1 != nil || err2 != nil || b <= a {
		return 0, 0, false
	}
	return uintptr(a), uintptr(b), true
}
