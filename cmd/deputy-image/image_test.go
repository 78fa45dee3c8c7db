package main

import (
	"archive/tar"
	"bufio"
	"crypto/x509"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const repoRoot = "../.."

// built is the image under test: the one `make image` wrote (DEPUTY_IMAGE
// names its OCI layout, DEPUTY_IMAGE_VERSION and _REVISION what it was
// stamped with), or, when run alone, one built here the same way.
type built struct {
	img                     v1.Image
	desc                    v1.Descriptor
	version, revision, arch string
	tarball                 string
}

func openImage(t *testing.T) built {
	t.Helper()
	dir := os.Getenv("DEPUTY_IMAGE")
	b := built{version: os.Getenv("DEPUTY_IMAGE_VERSION"), revision: os.Getenv("DEPUTY_IMAGE_REVISION"), arch: runtime.GOARCH}
	if dir == "" {
		dir, b.tarball = buildHere(t, &b)
	} else if b.version == "" || b.revision == "" {
		t.Fatal("DEPUTY_IMAGE is set: DEPUTY_IMAGE_VERSION and DEPUTY_IMAGE_REVISION must say what it was stamped with")
	} else {
		b.tarball = filepath.Join(filepath.Dir(dir), filepath.Base(dir)+".tar")
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatalf("open OCI layout %s: %v", dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 {
		t.Fatalf("layout holds %d manifests, want 1", len(m.Manifests))
	}
	b.desc = m.Manifests[0]
	if b.img, err = p.Image(b.desc.Digest); err != nil {
		t.Fatal(err)
	}
	return b
}

// buildHere compiles a static binary and builds the image the way the
// Makefile does, into a temporary directory.
func buildHere(t *testing.T, b *built) (dir, tarPath string) {
	t.Helper()
	tmp := t.TempDir()
	b.version, b.revision = "v9.8.7-test", "0123456789abcdef0123456789abcdef01234567"
	bin := filepath.Join(tmp, "deputy")
	cmd := exec.Command("go", "build", "-trimpath", "-tags", "grpcnotrace", "-ldflags",
		"-s -w -X github.com/deputyhq/deputy/sidecar/buildinfo.version="+b.version+
			" -X github.com/deputyhq/deputy/sidecar/buildinfo.commit="+b.revision,
		"-o", bin, "./cmd/deputy")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	spec := Spec{Binary: bin, Policies: filepath.Join(repoRoot, "policies"), CACerts: DefaultCACerts,
		Version: b.version, Revision: b.revision, Arch: b.arch, Repository: DefaultRepository,
		Created: time.Unix(1700000000, 0).UTC()}
	img, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	dir, tarPath = filepath.Join(tmp, "oci"), filepath.Join(tmp, "oci.tar")
	if err := Write(img, spec, dir, tarPath); err != nil {
		t.Fatal(err)
	}
	return dir, tarPath
}

func TestImage(t *testing.T) {
	b := openImage(t)
	cf, err := b.img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	files := extract(t, b.img)

	t.Run("manifest is OCI and tagged with the version", func(t *testing.T) {
		mt, err := b.img.MediaType()
		if err != nil {
			t.Fatal(err)
		}
		if mt != types.OCIManifestSchema1 {
			t.Fatalf("manifest media type %s", mt)
		}
		want := DefaultRepository + ":" + strings.TrimPrefix(b.version, "v")
		if got := b.desc.Annotations["org.opencontainers.image.ref.name"]; got != want {
			t.Fatalf("ref name %q, want %q", got, want)
		}
		layers, err := b.img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			if mt, _ := l.MediaType(); mt != types.OCILayer {
				t.Fatalf("layer media type %s, want %s", mt, types.OCILayer)
			}
		}
	})

	t.Run("runs as nonroot through the deputy entrypoint", func(t *testing.T) {
		c := cf.Config
		if c.User != "65532:65532" {
			t.Fatalf("user %q", c.User)
		}
		if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/deputy"}) || !slices.Equal(c.Cmd, []string{"serve"}) {
			t.Fatalf("entrypoint %q cmd %q", c.Entrypoint, c.Cmd)
		}
		if cf.OS != "linux" || cf.Architecture != b.arch {
			t.Fatalf("platform %s/%s", cf.OS, cf.Architecture)
		}
		for _, p := range []string{"9191/tcp", "8181/tcp", "9090/tcp"} {
			if _, ok := c.ExposedPorts[p]; !ok {
				t.Fatalf("port %s not exposed: %v", p, c.ExposedPorts)
			}
		}
		passwd := string(files["etc/passwd"].data)
		if !strings.Contains(passwd, "\nnonroot:x:65532:65532:") {
			t.Fatalf("/etc/passwd has no nonroot 65532:\n%s", passwd)
		}
		home := files["home/nonroot"]
		if home.hdr == nil || home.hdr.Uid != 65532 || home.hdr.Typeflag != tar.TypeDir {
			t.Fatalf("/home/nonroot missing or not owned by 65532: %+v", home.hdr)
		}
	})

	t.Run("OCI labels carry version and revision", func(t *testing.T) {
		l := cf.Config.Labels
		if l["org.opencontainers.image.version"] != b.version || l["org.opencontainers.image.revision"] != b.revision {
			t.Fatalf("labels %v, want version %s revision %s", l, b.version, b.revision)
		}
		for _, k := range []string{"title", "source", "licenses", "created", "description"} {
			if l["org.opencontainers.image."+k] == "" {
				t.Fatalf("label org.opencontainers.image.%s missing: %v", k, l)
			}
		}
		if _, err := time.Parse(time.RFC3339, l["org.opencontainers.image.created"]); err != nil {
			t.Fatalf("created label: %v", err)
		}
	})

	t.Run("nothing the process runs is writable by it", func(t *testing.T) {
		// A read-only root file system changes nothing for Deputy; and
		// without one, uid 65532 still cannot replace its binary or policies.
		for name, f := range files {
			writable := f.hdr.Uid == 65532 || f.hdr.Mode&0o002 != 0
			if writable && name != "home/nonroot" && name != "tmp" {
				t.Errorf("%s is writable by the runtime user (uid %d mode %o)", name, f.hdr.Uid, f.hdr.Mode)
			}
		}
		bin := files["usr/local/bin/deputy"]
		if bin.hdr == nil || bin.hdr.Mode&0o111 == 0 || bin.hdr.Uid != 0 {
			t.Fatalf("binary missing, not executable or not root-owned: %+v", bin.hdr)
		}
		if tmp := files["tmp"]; tmp.hdr == nil || tmp.hdr.Mode&0o1777 != 0o1777 {
			t.Fatal("/tmp missing or not sticky and world-writable")
		}
	})

	t.Run("CA certificates parse", func(t *testing.T) {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(files["etc/ssl/certs/ca-certificates.crt"].data) {
			t.Fatal("no CA certificate in /etc/ssl/certs/ca-certificates.crt")
		}
		if n := strings.Count(string(files["etc/ssl/certs/ca-certificates.crt"].data), "BEGIN CERTIFICATE"); n < 50 {
			t.Fatalf("only %d CA certificates", n)
		}
	})

	t.Run("shipped policies without their tests", func(t *testing.T) {
		if files["etc/deputy/policies/deputy/authz/authz.rego"].hdr == nil {
			t.Fatal("/etc/deputy/policies/deputy/authz/authz.rego missing")
		}
		for name := range files {
			if strings.HasSuffix(name, "_test.rego") || strings.HasSuffix(name, ".go") {
				t.Errorf("%s shipped", name)
			}
		}
	})

	binPath := filepath.Join(t.TempDir(), "deputy")
	if err := os.WriteFile(binPath, files["usr/local/bin/deputy"].data, 0o755); err != nil {
		t.Fatal(err)
	}

	t.Run("binary is static", func(t *testing.T) {
		f, err := elf.Open(binPath)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Fatal("binary has an ELF interpreter: it needs libc, which the image does not have")
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Fatalf("binary links %v", libs)
		}
	})

	t.Run("binary from the layer runs deputy version", func(t *testing.T) {
		if b.arch != runtime.GOARCH {
			t.Fatalf("image is %s, this machine %s: build the image for this machine to test it", b.arch, runtime.GOARCH)
		}
		out, err := exec.Command(binPath, "version", "--json").Output()
		if err != nil {
			t.Fatalf("deputy version: %v", err)
		}
		var info struct {
			Version   string `json:"version"`
			Commit    string `json:"commit"`
			GoVersion string `json:"go_version"`
		}
		if err := json.Unmarshal(out, &info); err != nil {
			t.Fatalf("deputy version --json: %v: %s", err, out)
		}
		if info.Version != b.version || info.Commit != b.revision || !strings.HasPrefix(info.GoVersion, "go1.") {
			t.Fatalf("deputy version says %+v, the image was built as %s at %s", info, b.version, b.revision)
		}
	})

	t.Run("tarball holds the same image", func(t *testing.T) {
		img, err := tarball.ImageFromPath(b.tarball, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := img.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		want, err := b.img.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("tarball config %s, layout config %s", got, want)
		}
	})

	t.Run("Dockerfile describes the same image", func(t *testing.T) {
		df := parseDockerfile(t, filepath.Join(repoRoot, "Dockerfile"))
		c := cf.Config
		if df.user != c.User || df.workdir != c.WorkingDir {
			t.Errorf("Dockerfile USER %q WORKDIR %q; image %q %q", df.user, df.workdir, c.User, c.WorkingDir)
		}
		if !slices.Equal(df.entrypoint, c.Entrypoint) || !slices.Equal(df.cmd, c.Cmd) {
			t.Errorf("Dockerfile ENTRYPOINT %q CMD %q; image %q %q", df.entrypoint, df.cmd, c.Entrypoint, c.Cmd)
		}
		var ports []string
		for p := range c.ExposedPorts {
			ports = append(ports, p)
		}
		slices.Sort(ports)
		slices.Sort(df.expose)
		if !slices.Equal(df.expose, ports) {
			t.Errorf("Dockerfile EXPOSE %v; image %v", df.expose, ports)
		}
		var labels []string
		for k := range c.Labels {
			labels = append(labels, k)
		}
		slices.Sort(labels)
		slices.Sort(df.labels)
		if !reflect.DeepEqual(df.labels, labels) {
			t.Errorf("Dockerfile labels %v; image %v", df.labels, labels)
		}
		for _, dst := range []string{BinaryPath, PoliciesDir + "/"} {
			if !slices.Contains(df.copies, dst) {
				t.Errorf("Dockerfile copies nothing to %s (copies to %v)", dst, df.copies)
			}
		}
	})
}

// The chart runs this image: the same repository, as the same user.
func TestChartRunsThisImage(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "charts", "deputy", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	values := string(raw)
	for _, want := range []string{"repository: " + DefaultRepository + "\n", "runAsUser: " + strconv.Itoa(UID) + "\n", "runAsGroup: " + strconv.Itoa(UID) + "\n"} {
		if !strings.Contains(values, want) {
			t.Errorf("charts/deputy/values.yaml does not say %q", strings.TrimSpace(want))
		}
	}
}

// TestReproducible: one commit, one digest.
func TestReproducible(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "deputy")
	if err := os.WriteFile(bin, []byte("\x7fELF not really"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := Spec{Binary: bin, Policies: filepath.Join(repoRoot, "policies"), CACerts: DefaultCACerts,
		Version: "v1.0.0", Revision: "abc", Arch: "amd64", Repository: DefaultRepository, Created: time.Unix(1700000000, 0)}
	var digests []v1.Hash
	for range 2 {
		img, err := Build(spec)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
	}
	if digests[0] != digests[1] {
		t.Fatalf("two builds of one input: %s and %s", digests[0], digests[1])
	}
}

func TestBuildRefusesIncompleteSpec(t *testing.T) {
	ok := Spec{Binary: "x", Version: "v1", Revision: "r", Arch: "amd64", CACerts: DefaultCACerts}
	cases := map[string]func(*Spec){
		"no binary":   func(s *Spec) { s.Binary = "" },
		"no version":  func(s *Spec) { s.Version = "" },
		"no revision": func(s *Spec) { s.Revision = "" },
		"no CA certs": func(s *Spec) { s.CACerts = filepath.Join(t.TempDir(), "missing.crt") },
	}
	for name, mutateSpec := range cases {
		t.Run(name, func(t *testing.T) {
			s := ok
			mutateSpec(&s)
			if _, err := Build(s); err == nil {
				t.Fatal("built an image from an incomplete spec")
			}
		})
	}
}

type fileEntry struct {
	hdr  *tar.Header
	data []byte
}

// extract reads the image's flattened file system.
func extract(t *testing.T, img v1.Image) map[string]fileEntry {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	files := map[string]fileEntry{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimSuffix(strings.TrimPrefix(h.Name, "/"), "/")] = fileEntry{hdr: h, data: data}
	}
	return files
}

type dockerfile struct {
	user, workdir          string
	entrypoint, cmd        []string
	expose, labels, copies []string
}

// parseDockerfile reads the final stage's instructions (enough of the
// syntax for this repository's Dockerfile).
func parseDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if s, ok := strings.CutSuffix(l, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(l)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	var df dockerfile
	for _, l := range lines {
		instr, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM":
			df = dockerfile{} // only the final stage counts
		case "USER":
			df.user = rest
		case "WORKDIR":
			df.workdir = rest
		case "ENTRYPOINT":
			df.entrypoint = jsonArray(t, rest)
		case "CMD":
			df.cmd = jsonArray(t, rest)
		case "EXPOSE":
			df.expose = strings.Fields(rest)
		case "LABEL":
			for _, kv := range strings.Fields(rest) {
				if k, _, ok := strings.Cut(kv, "="); ok {
					df.labels = append(df.labels, k)
				}
			}
		case "COPY":
			fields := strings.Fields(rest)
			df.copies = append(df.copies, fields[len(fields)-1])
		}
	}
	return df
}

func jsonArray(t *testing.T, s string) []string {
	t.Helper()
	var out []string
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		t.Fatalf("not an exec-form array: %s", strconv.Quote(s))
	}
	return out
}
