package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// What the image holds and how it runs. The Dockerfile says the same.
const (
	BinaryPath        = "/usr/local/bin/deputy"
	PoliciesDir       = "/etc/deputy/policies"
	CACertsPath       = "/etc/ssl/certs/ca-certificates.crt"
	HomeDir           = "/home/nonroot"
	User              = "65532:65532"
	UID               = 65532
	DefaultCACerts    = "/etc/ssl/certs/ca-certificates.crt"
	DefaultRepository = "ghcr.io/deputyhq/deputy"
	Source            = "https://github.com/deputyhq/deputy"
)

// Entrypoint and Cmd: `docker run IMAGE` serves; `docker run IMAGE version`
// runs any other subcommand.
var (
	Entrypoint   = []string{BinaryPath}
	Cmd          = []string{"serve"}
	ExposedPorts = []string{"8181/tcp", "9090/tcp", "9191/tcp"}
)

// Spec is one image build.
type Spec struct {
	Binary, Policies, CACerts string
	Version, Revision         string
	Arch, Repository          string
	Created                   time.Time
}

func (s Spec) validate() error {
	switch {
	case s.Binary == "":
		return errors.New("-binary is required")
	case s.Version == "":
		return errors.New("-version is required")
	case s.Revision == "":
		return errors.New("-revision is required")
	case s.Arch == "":
		return errors.New("-arch is required")
	}
	return nil
}

// Tag is the image reference: the repository at the version without its
// leading v, as the chart's appVersion names it.
func (s Spec) Tag() (name.Tag, error) {
	return name.NewTag(s.Repository + ":" + strings.TrimPrefix(s.Version, "v"))
}

// Labels are the OCI annotations of the image config.
func (s Spec) Labels() map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       "deputy",
		"org.opencontainers.image.description": "Authorization sidecar for Envoy with delegated identity",
		"org.opencontainers.image.source":      Source,
		"org.opencontainers.image.licenses":    "Apache-2.0",
		"org.opencontainers.image.version":     s.Version,
		"org.opencontainers.image.revision":    s.Revision,
		"org.opencontainers.image.created":     s.Created.UTC().Format(time.RFC3339),
	}
}

// Build assembles the image from its two layers.
func Build(s Spec) (v1.Image, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	base, err := baseLayer(s)
	if err != nil {
		return nil, err
	}
	app, err := appLayer(s)
	if err != nil {
		return nil, err
	}
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1),
		mutate.Addendum{Layer: base, History: v1.History{CreatedBy: "deputy-image: users, CA certificates, /tmp", Created: v1.Time{Time: s.Created}}},
		mutate.Addendum{Layer: app, History: v1.History{CreatedBy: "deputy-image: " + BinaryPath + " and " + PoliciesDir, Created: v1.Time{Time: s.Created}}},
	)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", s.Arch
	cf.Created = v1.Time{Time: s.Created}
	ports := map[string]struct{}{}
	for _, p := range ExposedPorts {
		ports[p] = struct{}{}
	}
	cf.Config = v1.Config{
		User:         User,
		Entrypoint:   Entrypoint,
		Cmd:          Cmd,
		WorkingDir:   HomeDir,
		Env:          []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + HomeDir, "SSL_CERT_FILE=" + CACertsPath},
		Labels:       s.Labels(),
		ExposedPorts: ports,
	}
	return mutate.ConfigFile(img, cf)
}

// Write stores the image as an OCI layout directory and/or a tarball.
func Write(img v1.Image, s Spec, layoutDir, tarballPath string) error {
	tag, err := s.Tag()
	if err != nil {
		return err
	}
	if layoutDir != "" {
		if err := os.RemoveAll(layoutDir); err != nil {
			return err
		}
		p, err := layout.Write(layoutDir, empty.Index)
		if err != nil {
			return err
		}
		if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
			"org.opencontainers.image.ref.name": tag.Name(),
		})); err != nil {
			return err
		}
	}
	if tarballPath != "" {
		if err := tarball.WriteToFile(tarballPath, tag, img); err != nil {
			return err
		}
	}
	return nil
}

// entry is one file system entry of a layer.
type entry struct {
	name     string
	mode     int64
	typeflag byte
	uid      int
	data     []byte
}

func dir(name string, mode int64, uid int) entry {
	return entry{name: name, mode: mode, typeflag: tar.TypeDir, uid: uid}
}

func file(name string, mode int64, data []byte) entry {
	return entry{name: name, mode: mode, typeflag: tar.TypeReg, data: data}
}

// baseLayer is what a distroless static base holds: root and nonroot
// users, CA certificates, a home for nonroot and a sticky /tmp. Nothing
// in it is writable by the user Deputy runs as, except its home and /tmp,
// which a read-only root file system turns into mounts anyway.
func baseLayer(s Spec) (v1.Layer, error) {
	certs, err := os.ReadFile(s.CACerts)
	if err != nil {
		return nil, fmt.Errorf("CA certificates: %w (install Debian's ca-certificates)", err)
	}
	if !bytes.Contains(certs, []byte("-----BEGIN CERTIFICATE-----")) {
		return nil, fmt.Errorf("CA certificates: %s holds no PEM certificate", s.CACerts)
	}
	return layer(s.Created, []entry{
		dir("etc", 0o755, 0),
		file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")),
		file("etc/group", 0o644, []byte("root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n")),
		file("etc/nsswitch.conf", 0o644, []byte("hosts: files dns\n")),
		dir("etc/ssl", 0o755, 0),
		dir("etc/ssl/certs", 0o755, 0),
		file(strings.TrimPrefix(CACertsPath, "/"), 0o644, certs),
		dir("home", 0o755, 0),
		dir(strings.TrimPrefix(HomeDir, "/"), 0o700, UID),
		dir("root", 0o700, 0),
		dir("tmp", 0o1777, 0),
	})
}

// appLayer holds the binary and the shipped policies, owned by root so
// the running user cannot change them.
func appLayer(s Spec) (v1.Layer, error) {
	bin, err := os.ReadFile(s.Binary)
	if err != nil {
		return nil, err
	}
	entries := []entry{
		dir("usr", 0o755, 0), dir("usr/local", 0o755, 0), dir("usr/local/bin", 0o755, 0),
		file(strings.TrimPrefix(BinaryPath, "/"), 0o755, bin),
		dir("etc", 0o755, 0), dir("etc/deputy", 0o755, 0),
	}
	if s.Policies != "" {
		pol, err := tree(s.Policies, strings.TrimPrefix(PoliciesDir, "/"))
		if err != nil {
			return nil, fmt.Errorf("policies: %w", err)
		}
		entries = append(entries, pol...)
	}
	return layer(s.Created, entries)
}

// tree copies a directory's policy and data files; tests stay out.
func tree(src, dst string) ([]entry, error) {
	var out []entry
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := path.Join(dst, filepath.ToSlash(rel))
		switch {
		case d.IsDir():
			out = append(out, dir(target, 0o755, 0))
		case d.Type().IsRegular():
			if !policyFile(p) {
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out = append(out, file(target, 0o644, data))
		default:
			return fmt.Errorf("%s: not a regular file or directory", p)
		}
		return nil
	})
	return out, err
}

// layer writes entries into an uncompressed tar, in name order and with
// the same time on every entry, so one commit always gives one digest.
func layer(mtime time.Time, entries []entry) (v1.Layer, error) {
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		name := e.name
		if e.typeflag == tar.TypeDir {
			name += "/"
		}
		h := &tar.Header{Name: name, Mode: e.mode, Typeflag: e.typeflag, Uid: e.uid, Gid: e.uid,
			Size: int64(len(e.data)), ModTime: mtime, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

func policyFile(p string) bool {
	switch filepath.Ext(p) {
	case ".rego":
		return !strings.HasSuffix(p, "_test.rego")
	case ".json", ".yaml", ".yml":
		return true
	}
	return false
}
