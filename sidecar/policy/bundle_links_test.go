package policy_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar/policy"
)

const (
	linkedAllow = "package deputy.authz\n\ndefault allow := false\n\ndefault deny := false\n\nallow if not deny\n\ndecision := {\"allowed\": allow}\n"
	linkedDeny  = "package deputy.authz\n\ndeny if input.attributes.request.http.method == \"DELETE\"\n"
)

// decideDelete serves cfg and returns its decision on a DELETE, or the
// error that refused cfg's policies.
func decideDelete(t *testing.T, cfg policy.Config) (string, error) {
	t.Helper()
	e := policy.New(policy.WithLogger(quiet()))
	src, err := policy.NewSource(cfg, e, policy.WithSourceLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Reload(context.Background()); err != nil {
		return "", err
	}
	in := ast.MustParseTerm(`{"attributes":{"request":{"http":{"method":"DELETE"}}}}`).Value
	res, err := e.Eval(context.Background(), policy.DefaultDecisionQuery, in)
	if err != nil {
		t.Fatal(err)
	}
	return res.Value.String(), nil
}

// deniedAsPathsAndBundleDir checks that dir, served as policy.paths, denies
// a DELETE, and decides it alike served as policy.bundle_file; it returns
// the decision.
func deniedAsPathsAndBundleDir(t *testing.T, dir string) string {
	t.Helper()
	want, err := decideDelete(t, policy.Config{Paths: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	if want != `{"allowed": false}` {
		t.Fatalf("policy.paths decides DELETE %s, want it denied", want)
	}
	if got, err := decideDelete(t, policy.Config{BundleFile: dir}); err != nil || got != want {
		t.Errorf("as policy.bundle_file: DELETE %s (err %v), want %s as policy.paths", got, err, want)
	}
	return want
}

// A bundle directory whose deny rule reaches it through a link decides as
// the same directory served as policy.paths, or is refused: OPA's readers
// pass over symbolic links and link entries without a word, and a DELETE
// the directory denies was allowed (and `deputy bundle sign` signed the
// bundle without the rule). Packed with tar(1) as it comes, the link is a
// link entry, refused with its name; packed with -h, it is the file.
func TestBundleLinkedRulesReadAsDirectory(t *testing.T) {
	cases := []struct {
		name  string
		link  func(t *testing.T, shared, authz string) // puts deny.rego, from shared, into authz
		entry string                                   // the tar entry refused, as tar(1) names it
	}{
		{"symlinked file", func(t *testing.T, shared, authz string) {
			if err := os.Symlink(filepath.Join(shared, "deny.rego"), filepath.Join(authz, "deny.rego")); err != nil {
				t.Fatal(err)
			}
		}, "./deputy/authz/deny.rego is a symbolic link"},
		{"symlinked directory", func(t *testing.T, shared, authz string) {
			if err := os.Symlink(shared, filepath.Join(authz, "shared")); err != nil {
				t.Fatal(err)
			}
		}, "./deputy/authz/shared is a symbolic link"},
		{"hard-linked file", func(t *testing.T, shared, authz string) {
			// tar(1) packs the first name as the file and the second as
			// a link to it: the rule sits at a name the bundle drops.
			if err := os.Link(filepath.Join(shared, "deny.rego"), filepath.Join(authz, "deny.rego")); err != nil {
				t.Fatal(err)
			}
			if err := os.Link(filepath.Join(shared, "deny.rego"), filepath.Join(authz, "a_deny.rego")); err != nil {
				t.Fatal(err)
			}
		}, "is a hard link"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			dir, shared := filepath.Join(root, "bundle"), filepath.Join(root, "shared")
			authz := filepath.Join(dir, "deputy", "authz")
			for _, d := range []string{authz, shared} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			writeFile(t, filepath.Join(dir, ".manifest"), `{"revision":"r1","roots":["deputy"]}`)
			writeFile(t, filepath.Join(authz, "authz.rego"), linkedAllow)
			writeFile(t, filepath.Join(shared, "deny.rego"), linkedDeny)
			c.link(t, shared, authz)

			want := deniedAsPathsAndBundleDir(t, dir)

			packed := filepath.Join(root, "packed.tar.gz")
			tarball(t, packed, "-czf", packed, "-C", dir, ".")
			if got, err := decideDelete(t, policy.Config{BundleFile: packed}); err == nil || !strings.Contains(err.Error(), c.entry) {
				t.Errorf("tar -czf of it: DELETE %s, err %v; want refused naming %q", got, err, c.entry)
			}
			if _, err := policy.ReadBundleFile(packed, policy.ReadOptions{}); err == nil {
				t.Errorf("ReadBundleFile (deputy bundle sign's reader) read a bundle with a link entry")
			}

			followed := filepath.Join(root, "followed.tar.gz")
			tarball(t, followed, "-czhf", followed, "--hard-dereference", "-C", dir, ".")
			if got, err := decideDelete(t, policy.Config{BundleFile: followed}); err != nil || got != want {
				t.Errorf("tar -czhf of it: DELETE %s (err %v), want %s as policy.paths", got, err, want)
			}
		})
	}
}

func tarball(t *testing.T, out string, args ...string) {
	t.Helper()
	if b, err := exec.Command("tar", args...).CombinedOutput(); err != nil {
		t.Fatalf("tar %v: %v: %s", args, err, b)
	}
}

// Every tar entry that is neither a regular file nor a directory is
// refused with its name, whatever it points to: OPA's tarball loader
// drops it, so the bundle would serve (and a signature bless) less than
// was packed.
func TestBundleRefusesOtherTarEntries(t *testing.T) {
	cases := []struct {
		name string
		hdr  tar.Header
		want string
	}{
		{"symlink", tar.Header{Name: "/deputy/authz/deny.rego", Typeflag: tar.TypeSymlink, Linkname: "/etc/deny.rego"}, "/deputy/authz/deny.rego is a symbolic link to /etc/deny.rego"},
		{"hard link", tar.Header{Name: "/deputy/authz/deny.rego", Typeflag: tar.TypeLink, Linkname: "/deputy/authz/authz.rego"}, "/deputy/authz/deny.rego is a hard link to /deputy/authz/authz.rego"},
		{"fifo", tar.Header{Name: "/deputy/authz/deny.rego", Typeflag: tar.TypeFifo}, "/deputy/authz/deny.rego is of tar type"},
		{"character device", tar.Header{Name: "/deputy/authz/data.json", Typeflag: tar.TypeChar}, "/deputy/authz/data.json is of tar type"},
		{"block device", tar.Header{Name: "/deputy/authz/data.json", Typeflag: tar.TypeBlock}, "/deputy/authz/data.json is of tar type"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			gz := gzip.NewWriter(&buf)
			tw := tar.NewWriter(gz)
			add := func(name, body string) {
				if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body))}); err != nil {
					t.Fatal(err)
				}
				if _, err := tw.Write([]byte(body)); err != nil {
					t.Fatal(err)
				}
			}
			add("/.manifest", `{"revision":"r1","roots":["deputy"]}`)
			add("/deputy/authz/authz.rego", linkedAllow)
			h := c.hdr
			h.Mode = 0o644
			if err := tw.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
			_ = tw.Close()
			_ = gz.Close()
			_, err := policy.ReadBundle(bytes.NewReader(buf.Bytes()), policy.ReadOptions{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want the entry refused: %q", err, c.want)
			}
		})
	}
}

// A bundle directory mounted from a ConfigMap is all symbolic links
// through the kubelet's hidden ..data: served as policy.bundle_file it
// reads the rules it holds, as policy.paths reads them, once each.
func TestConfigMapBundleDirectory(t *testing.T) {
	for _, layout := range []struct{ name, authz, deny string }{
		{"flat keys", "authz.rego", "deny.rego"},
		{"items with paths", "deputy/authz/authz.rego", "deputy/authz/deny.rego"},
	} {
		t.Run(layout.name, func(t *testing.T) {
			dir := t.TempDir()
			kubeletWrite(t, dir, "v1", map[string]string{
				".manifest":  `{"revision":"cm1","roots":["deputy"]}`,
				layout.authz: linkedAllow,
				layout.deny:  linkedDeny,
			})
			deniedAsPathsAndBundleDir(t, dir)
			b, err := policy.ReadBundleDir(dir, policy.ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var paths []string
			for _, m := range b.Modules {
				paths = append(paths, m.Path)
			}
			if len(paths) != 2 || b.Manifest.Revision != "cm1" {
				t.Errorf("modules %v, revision %q: want the two mounted modules, once each, and revision cm1", paths, b.Manifest.Revision)
			}
		})
	}
}
