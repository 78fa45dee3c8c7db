package policy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/keys"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/loader/filter"

	"github.com/deputyhq/deputy/sidecar"
)

// DefaultRoots are the data roots a Deputy bundle owns: its own rules and
// OPA's system tree (data.system.log.mask).
var DefaultRoots = []string{"deputy", "system"}

// Signing algorithms Deputy documents; OPA accepts more.
const (
	AlgES256 = "ES256"
	AlgRS256 = "RS256"
)

// signingAlgorithms are the algorithms a bundle is signed and verified
// with: the asymmetric ones OPA supports. OPA also takes HS256, HS384 and
// HS512, for which the verification key is the signing secret: the public
// key configured to verify bundles would let whoever holds it, anyone,
// sign them.
var signingAlgorithms = []string{
	"ES256", "ES384", "ES512",
	"PS256", "PS384", "PS512",
	"RS256", "RS384", "RS512",
}

// checkAlgorithm refuses, naming field, an algorithm that is not in
// signingAlgorithms.
func checkAlgorithm(field, alg string) error {
	if !slices.Contains(signingAlgorithms, alg) {
		return sidecar.Invalid(field, "%q is not a public-key signing algorithm: want one of %s (HMAC would make the public key a signing secret)",
			alg, strings.Join(signingAlgorithms, ", "))
	}
	return nil
}

// DefaultKeyID names the verification key when a single public key is
// configured; tokens without a kid are checked against it.
const DefaultKeyID = "deputy"

// BuildOptions describe a bundle build.
type BuildOptions struct {
	Revision     string   // manifest revision, usually the commit
	Roots        []string // manifest roots; DefaultRoots when empty
	IncludeTests bool     // keep *_test.rego modules in the bundle
	// AllowBuiltins are refused built-ins the policies may call anyway:
	// the serving Deputy's policy.allow_builtins.
	AllowBuiltins []string
}

// BuildBundle loads Rego and data from paths, compiles them strictly and
// returns an OPA bundle whose manifest carries the revision and roots. Test
// modules are left out unless asked for: a serving Deputy never runs them.
func BuildBundle(paths []string, opts BuildOptions) (*bundle.Bundle, error) {
	roots := opts.Roots
	if len(roots) == 0 {
		roots = DefaultRoots
	}
	filter := dirFilter{tests: opts.IncludeTests, values: newValueBudget("paths", DefaultMaxBundleValues), maxBytes: DefaultMaxBundleBytes}
	res, err := loader.NewFileLoader().
		WithProcessAnnotation(true).
		WithRegoVersion(ast.RegoV1).
		Filtered(paths, filter.skip)
	if err := filter.err("paths"); err != nil {
		return nil, err
	}
	if err != nil {
		return nil, sidecar.Invalid("paths", "load %s: %v", strings.Join(paths, ","), err)
	}
	if len(res.Modules) == 0 {
		return nil, sidecar.Invalid("paths", "no Rego modules under %s", strings.Join(paths, ","))
	}
	b := &bundle.Bundle{Data: res.Documents}
	b.SetRegoVersion(ast.RegoV1)
	b.Manifest.Revision = opts.Revision
	b.Manifest.Roots = &roots
	b.Manifest.Init()
	names := make([]string, 0, len(res.Modules))
	for name := range res.Modules {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		m := res.Modules[name]
		p := "/" + strings.TrimPrefix(filepath.ToSlash(relativeTo(paths, m.Name)), "/")
		b.Modules = append(b.Modules, bundle.ModuleFile{URL: p, Path: p, Raw: m.Raw, Parsed: m.Parsed})
	}
	if err := strictCompile(b.ParsedModules(""), b.Data, opts.AllowBuiltins); err != nil {
		return nil, err
	}
	// Round-trip through the reader so a bundle that would be refused at
	// load (data or packages outside the roots) is refused at build time.
	var buf bytes.Buffer
	if err := WriteBundle(&buf, b); err != nil {
		return nil, err
	}
	if _, err := ReadBundle(&buf, ReadOptions{Roots: roots}); err != nil {
		return nil, err
	}
	return b, nil
}

// relativeTo strips the directory given on the command line, so a module
// read from policies/deputy/authz/authz.rego sits at /deputy/authz/authz.rego in the
// bundle, as `opa build -b` would place it.
func relativeTo(paths []string, name string) string {
	for _, p := range paths {
		if rel, err := filepath.Rel(p, name); err == nil && !strings.HasPrefix(rel, "..") && rel != "." {
			return rel
		}
	}
	return name
}

// WriteBundle writes b as a gzipped tarball in OPA's bundle format.
func WriteBundle(w io.Writer, b *bundle.Bundle) error {
	if err := bundle.NewWriter(w).DisableFormat(true).Write(*b); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	return nil
}

// SignOptions describe how a bundle is signed.
type SignOptions struct {
	Key       string // private key: a PEM file path or the PEM itself
	Algorithm string // ES256, RS256, ...; ES256 when empty
	KeyID     string // kid of the signing key; optional
	Scope     string // scope claim checked by verifiers; optional
	// IssuedAt is the signed iat claim: a serving Deputy refuses a bundle
	// issued before the one it serves. Now when zero.
	IssuedAt time.Time
}

// SignBundle adds (or replaces) the .signatures.json of b, signing every
// file of the bundle with OPA's bundle signing.
func SignBundle(b *bundle.Bundle, opts SignOptions) error {
	if opts.Key == "" {
		return sidecar.Invalid("key", "a signing key is required")
	}
	alg := opts.Algorithm
	if alg == "" {
		alg = AlgES256
	}
	if err := checkAlgorithm("alg", alg); err != nil {
		return err
	}
	key := opts.Key
	if bs, err := os.ReadFile(key); err == nil {
		key = string(bs)
	} else if !strings.Contains(key, "-----BEGIN") {
		return sidecar.Invalid("key", "read %s: %v", opts.Key, err)
	}
	iat := opts.IssuedAt
	if iat.IsZero() {
		iat = time.Now()
	}
	claims := map[string]any{"iat": iat.Unix()}
	if opts.Scope != "" {
		claims["scope"] = opts.Scope
	}
	if opts.KeyID != "" {
		// OPA adds this deprecated claim itself only when it has no
		// claims file; older verifiers may still look for it.
		claims["keyid"] = opts.KeyID
	}
	// OPA takes extra claims only from a file.
	dir, err := os.MkdirTemp("", "deputy-claims")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sc := bundle.NewSigningConfig(key, alg, filepath.Join(dir, "claims.json"))
	bs, _ := json.Marshal(claims)
	if err := os.WriteFile(sc.ClaimsPath, bs, 0o600); err != nil {
		return err
	}
	if err := b.GenerateSignature(sc, opts.KeyID, false); err != nil {
		return sidecar.Invalid("key", "sign bundle: %v", err)
	}
	return nil
}

// ReadOptions describe how a bundle is read and checked.
type ReadOptions struct {
	PublicKey string   // PEM file path or PEM; when set, a valid signature is required
	Algorithm string   // of the public key; ES256 when empty
	Scope     string   // required scope claim, if any
	Roots     []string // roots the manifest may claim; DefaultRoots when empty
	Etag      string
	MaxBytes  int64 // the files' total size, inflated; DefaultMaxBundleBytes when zero
	// MaxValues bounds the values its data files and manifest parse into
	// (see valueBudget); DefaultMaxBundleValues when zero.
	MaxValues int64

	// key is PublicKey as a Source read it for one attempt, so that the
	// key a bundle is verified with is the key the Source's memory of
	// verified bundles is tied to (see Source.readKey); read from
	// PublicKey when nil.
	key *keys.Config
}

// values is a new count of the values read against opts.MaxValues.
func (o ReadOptions) values() *valueBudget { return newValueBudget("bundle", o.MaxValues) }

func (o ReadOptions) maxBytes() int64 {
	if o.MaxBytes > 0 {
		return o.MaxBytes
	}
	return DefaultMaxBundleBytes
}

// ReadBundle reads a bundle tarball, verifies its signature when a public
// key is configured and checks that its manifest stays inside the allowed
// roots. Any failure is an EINVALID error saying what is wrong.
//
// The tarball and the total of its files inflated are each bounded by
// opts.MaxBytes. OPA's tarball loader inflates and holds every file before
// its reader applies any size limit (1 GiB per file by default), so a small
// tarball could make Deputy hold gigabytes, signed or not; and it passes
// over, without a word, every entry that is not a regular file or a
// directory, so a rule file packed as a symbolic link would vanish from a
// bundle its signature still blesses. checkTarball therefore reads the tar
// headers first, refusing such entries and adding up the sizes the headers
// declare (the tar reader yields no more than its header says) with the
// entries' names, which OPA holds too; only a tarball it passes is handed
// to OPA, from the compressed bytes it kept (no more than the bound).
//
// checkTarball also reads every file OPA's reader parses into Go values
// before it checks them against the signature (data, manifest,
// signatures) and refuses the bundle when they are larger or hold more
// values than parsing them may cost (valueBudget).
func ReadBundle(r io.Reader, opts ReadOptions) (*bundle.Bundle, error) {
	max := opts.maxBytes()
	in := &boundedReader{r: r, max: max}
	var kept bytes.Buffer
	err := checkTarball(io.TeeReader(in, &kept), max, opts.values())
	if in.err != nil {
		return nil, in.err // the cause, rather than the tar reader's account of it
	}
	if err != nil {
		return nil, err
	}
	loader := bundle.NewTarballLoaderWithBaseURL(io.MultiReader(&kept, in), "").WithSizeLimitBytes(max)
	b, err := readBundle(loader, opts)
	if in.err != nil {
		return nil, in.err
	}
	return b, err
}

// readBundleBytes is ReadBundle of a tarball already held whole (a bundle
// server's answer), of which no copy need be kept.
func readBundleBytes(body []byte, opts ReadOptions) (*bundle.Bundle, error) {
	max := opts.maxBytes()
	if int64(len(body)) > max {
		return nil, errTooLarge(max)
	}
	if err := checkTarball(bytes.NewReader(body), max, opts.values()); err != nil {
		return nil, err
	}
	return readBundle(bundle.NewTarballLoaderWithBaseURL(bytes.NewReader(body), "").WithSizeLimitBytes(max), opts)
}

// MaxBundleEntries bounds the entries (files and directories) of a bundle
// tarball: OPA holds a record of each, and a policy set has tens of files.
const MaxBundleEntries = 10000

// maxEntryName bounds the name of an entry of a bundle tarball. PAX
// headers carry names up to 1 MiB, which OPA would hold whatever the
// entry's size: 300 empty files named so held 300 MiB.
const maxEntryName = 4096

// entryOverhead is what each tarball entry counts against the bound beyond
// its name, PAX records and contents: a tar header block.
const entryOverhead = 512

// checkTarball reads the headers of the gzipped tarball r, skipping the
// contents of the files OPA's reader does not parse, and refuses it when
// an entry is neither a regular file nor a directory (a symbolic or hard
// link, a device, a fifo: OPA's loader would drop it), when an entry's
// name is longer than maxEntryName, when it has more than
// MaxBundleEntries entries, when its entries' names, PAX records,
// contents and overhead add up to more than max, or when the files OPA's
// reader parses are larger or hold more values than values allows.
func checkTarball(r io.Reader, max int64, values *valueBudget) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return archiveFailed(err)
	}
	tr := tar.NewReader(gz)
	var total int64
	for n := 0; ; n++ {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return archiveFailed(err)
		}
		if n >= MaxBundleEntries {
			return sidecar.Invalid("bundle", "more than %d entries", MaxBundleEntries)
		}
		if len(h.Name) > maxEntryName {
			return sidecar.Invalid("bundle", "entry %q...: name longer than %d bytes", h.Name[:64], maxEntryName)
		}
		total += entryOverhead + int64(len(h.Name)+len(h.Linkname))
		for k, v := range h.PAXRecords {
			total += int64(len(k) + len(v))
		}
		switch h.Typeflag {
		case tar.TypeReg:
			total += h.Size
		case tar.TypeDir, tar.TypeXGlobalHeader: // a global header holds only PAX records (git archive writes one)
		case tar.TypeSymlink:
			return notRegular(h.Name, "a symbolic link to "+h.Linkname)
		case tar.TypeLink:
			return notRegular(h.Name, "a hard link to "+h.Linkname)
		default:
			return notRegular(h.Name, fmt.Sprintf("of tar type %q", h.Typeflag))
		}
		if total > max {
			return errTooLarge(max)
		}
		if h.Typeflag == tar.TypeReg {
			if err := values.check(h.Name, bundleParse(h.Name), h.Size, tr); err != nil {
				return err
			}
		}
	}
}

// checkTarballFile is checkTarball of the file at p.
func checkTarballFile(p string, max int64, values *valueBudget) error {
	f, err := os.Open(p)
	if err != nil {
		return sidecar.Invalid(values.field, "%v", err)
	}
	defer f.Close()
	return checkTarball(&boundedReader{r: f, max: max}, max, values)
}

// archiveError is the cause of a bundle refused because its gzip or tar
// stream could not be read through: corrupt, or cut short, as a transfer
// cut short leaves it too.
type archiveError struct{ error }

func archiveFailed(err error) error {
	return &sidecar.Error{Code: sidecar.EINVALID, Field: "bundle", Message: "archive read failed", Err: archiveError{err}}
}

func notRegular(name, what string) error {
	return sidecar.Invalid("bundle", "entry %s is %s, not a regular file or a directory, which a bundle would drop while a policy directory reads what it points to: pack the file itself (tar -h follows links)", name, what)
}

// ReadBundleDir reads a bundle laid out as a directory (with .manifest).
// Each file is bounded by opts.MaxBytes.
//
// Its files are found as policy.paths finds them (bundleDir): OPA's
// directory loader passes over symbolic links without a word, so a rule
// file linked into the directory would hold when it is served as
// policy.paths and vanish as policy.bundle_file.
func ReadBundleDir(dir string, opts ReadOptions) (*bundle.Bundle, error) {
	files, err := bundleDir(dir, opts.maxBytes(), opts.values())
	if err != nil {
		return nil, err
	}
	return readBundle(files, opts)
}

// bundleDir lists the files of the bundle directory dir through OPA's file
// loader, the one policy.paths reads with: it follows symbolic links to
// files and directories alike. A directory mounted from a Kubernetes
// ConfigMap is all such links, each top-level entry reaching its content
// through ..data; the kubelet's own hidden copies are left out, as the
// content is read through the links.
//
// Descriptors carry paths relative to dir, without dir in their URL
// either: OPA checks each file against the signature under that name,
// and the signature names files relative to the bundle.
//
// The files OPA's reader parses are read first and counted against
// values, as checkTarball counts them in a tarball.
func bundleDir(dir string, max int64, values *valueBudget) (bundle.DirectoryLoader, error) {
	paths, err := loader.FilteredPaths([]string{dir}, bundleDirSkip)
	if err != nil {
		return nil, sidecar.Invalid("bundle_file", "%v", err)
	}
	d := &dirFiles{}
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return nil, sidecar.Invalid("bundle_file", "%v", err)
		}
		if info.Size() > max {
			return nil, errTooLarge(max)
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return nil, sidecar.Invalid("bundle_file", "%v", err)
		}
		rel = "/" + filepath.ToSlash(rel)
		if err := checkFile(values, p, rel, bundleParse(rel), info.Size()); err != nil {
			return nil, err
		}
		d.files = append(d.files, dirFile{abs: p, rel: rel})
	}
	return d, nil
}

// checkFile counts the file at p, named name, against values, parsed as
// how.
func checkFile(values *valueBudget, p, name string, how parseAs, size int64) error {
	if how == parseNone {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return sidecar.Invalid(values.field, "%v", err)
	}
	defer f.Close()
	return values.check(name, how, size, f)
}

// bundleDirSkip is bundleDir's filter: it passes over the kubelet's
// hidden copies only.
func bundleDirSkip(abspath string, info fs.FileInfo, depth int) bool {
	return depth > 0 && info.IsDir() && kubeletCopy(abspath, info)
}

// dirFiles hands the files bundleDir listed to OPA's bundle reader, each
// opened only when the reader reads it.
type dirFiles struct {
	files []dirFile
	next  int
}

type dirFile struct {
	abs, rel string
	f        *os.File
}

func (d *dirFiles) NextFile() (*bundle.Descriptor, error) {
	if d.next >= len(d.files) {
		return nil, io.EOF
	}
	f := &d.files[d.next]
	d.next++
	return bundle.NewDescriptor(f.rel, f.rel, f).WithCloser(f), nil
}

func (f *dirFile) Read(p []byte) (int, error) {
	if f.f == nil {
		file, err := os.Open(f.abs)
		if err != nil {
			return 0, err
		}
		f.f = file
	}
	return f.f.Read(p)
}

func (f *dirFile) Close() error {
	if f.f == nil {
		return nil
	}
	return f.f.Close()
}

// The reader only iterates; bundleDir has already applied what these set.
func (d *dirFiles) WithFilter(filter.LoaderFilter) bundle.DirectoryLoader   { return d }
func (d *dirFiles) WithPathFormat(bundle.PathFormat) bundle.DirectoryLoader { return d }
func (d *dirFiles) WithSizeLimitBytes(int64) bundle.DirectoryLoader         { return d }
func (d *dirFiles) WithFollowSymlinks(bool) bundle.DirectoryLoader          { return d }

func errTooLarge(max int64) error {
	return sidecar.Invalid("bundle", "larger than policy.max_bundle_bytes (%d bytes)", max)
}

// boundedReader reads at most max bytes of r, failing (not truncating)
// beyond, and fails from the moment it is cut.
type boundedReader struct {
	r    io.Reader
	max  int64
	read int64
	err  error
}

func (b *boundedReader) cut(err error) {
	if b.err == nil {
		b.err = err
	}
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if room := b.max - b.read + 1; int64(len(p)) > room {
		p = p[:room] // one byte past the bound tells a tarball that is too large
	}
	n, err := b.r.Read(p)
	if b.read += int64(n); b.read > b.max {
		b.cut(errTooLarge(b.max))
		return 0, b.err
	}
	return n, err
}

func readBundle(files bundle.DirectoryLoader, opts ReadOptions) (*bundle.Bundle, error) {
	checked := &bundleFiles{DirectoryLoader: files}
	rd := bundle.NewCustomReader(checked).WithRegoVersion(ast.RegoV1).WithProcessAnnotations(true).WithBundleEtag(opts.Etag).
		WithSizeLimitBytes(opts.maxBytes())
	if opts.PublicKey != "" {
		vc, err := verificationConfig(opts)
		if err != nil {
			return nil, err
		}
		rd = rd.WithBundleVerificationConfig(vc)
	} else {
		// Without a key, a signed bundle is accepted unchecked rather than
		// refused: verification is the key holder's choice.
		rd = rd.WithSkipBundleVerification(true)
	}
	b, err := rd.Read()
	if err := checked.err("bundle"); err != nil {
		return nil, err
	}
	if err != nil {
		return nil, sidecar.Invalid("bundle", "%v", err)
	}
	if err := checkRoots(b.Manifest, opts.Roots); err != nil {
		return nil, err
	}
	if err := checkRegoV1(b.Manifest); err != nil {
		return nil, err
	}
	return &b, nil
}

// checkRegoV1 refuses a manifest that declares Rego other than v1 for the
// bundle or for a file: Deputy's policies are Rego v1, and `policy check`,
// `bundle build` and a policy directory read them only as v1, so a v0
// bundle would be judged one way and served another.
func checkRegoV1(m bundle.Manifest) error {
	if m.RegoVersion != nil && *m.RegoVersion != 1 {
		return sidecar.Invalid("bundle.rego_version", "manifest declares rego_version %d; Deputy serves Rego v1 only", *m.RegoVersion)
	}
	for _, file := range slices.Sorted(maps.Keys(m.FileRegoVersions)) {
		if v := m.FileRegoVersions[file]; v != 1 {
			return sidecar.Invalid("bundle.file_rego_versions", "manifest declares rego_version %d for %s; Deputy serves Rego v1 only", v, file)
		}
	}
	return nil
}

func verificationConfig(opts ReadOptions) (*bundle.VerificationConfig, error) {
	alg := opts.Algorithm
	if alg == "" {
		alg = AlgES256
	}
	if err := checkAlgorithm("key_algorithm", alg); err != nil {
		return nil, err
	}
	kc := opts.key
	if kc == nil {
		var err error
		if kc, err = keys.NewKeyConfig(opts.PublicKey, alg, opts.Scope); err != nil {
			return nil, sidecar.Invalid("public_key", "%v", err)
		}
	}
	if !strings.Contains(kc.Key, "-----BEGIN") {
		return nil, sidecar.Invalid("public_key", "%s is neither a readable PEM file nor a PEM key", opts.PublicKey)
	}
	return bundle.NewVerificationConfig(map[string]*bundle.KeyConfig{DefaultKeyID: kc}, DefaultKeyID, opts.Scope, nil), nil
}

// checkRoots refuses a bundle whose manifest claims data outside the roots
// Deputy owns, or claims the whole tree by declaring no roots at all.
func checkRoots(m bundle.Manifest, allowed []string) error {
	if len(allowed) == 0 {
		allowed = DefaultRoots
	}
	if m.Roots == nil || len(*m.Roots) == 0 {
		return sidecar.Invalid("bundle.roots", "manifest declares no roots; want roots within %v", allowed)
	}
	var outside []string
	for _, r := range *m.Roots {
		if r == "" || !bundle.RootPathsContain(allowed, r) {
			outside = append(outside, fmt.Sprintf("%q", r))
		}
	}
	if len(outside) > 0 {
		return sidecar.Invalid("bundle.roots", "manifest roots %s are outside %v", strings.Join(outside, ", "), allowed)
	}
	return nil
}

// SetFromBundle turns a read bundle into a policy set for Engine.Activate.
// Test modules are left out, as LoadPaths leaves them out of a directory:
// a bundle directory, or one built with its tests, serves the rules its
// directory serves, even where a test module declares a rule of its own.
func SetFromBundle(b *bundle.Bundle, source string) *Set {
	data := b.Data
	if data == nil {
		data = map[string]any{}
	}
	modules := b.ParsedModules("bundle")
	for name := range modules {
		if strings.HasSuffix(name, "_test.rego") {
			delete(modules, name)
		}
	}
	return &Set{Modules: modules, Data: data, Revision: b.Manifest.Revision, Source: source}
}

// ReadBundleFile reads a bundle from a .tar.gz file or a bundle directory.
func ReadBundleFile(path string, opts ReadOptions) (*bundle.Bundle, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, sidecar.Invalid("bundle_file", "%v", err)
	}
	if info.IsDir() {
		return ReadBundleDir(path, opts)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, sidecar.Invalid("bundle_file", "%v", err)
	}
	defer f.Close()
	return ReadBundle(f, opts)
}

// WriteBundleFile writes b to path through a temporary file, so a reader
// (a file source watching it, a bundle server) never sees half a bundle.
func WriteBundleFile(path string, b *bundle.Bundle) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".bundle-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := WriteBundle(tmp, b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

var errNoSignature = errors.New("bundle is not signed")

// SignedAt returns the issue time (iat) of b's signature, or the zero time
// when the signature carries none or b is unsigned. It trusts the
// signature: call it only on a bundle read with a public key, which OPA's
// reader verified. The payload is decoded as OPA's verifier decodes it,
// into OPA's own claims type, so both read the same claims.
func SignedAt(b *bundle.Bundle) (time.Time, error) {
	if len(b.Signatures.Signatures) != 1 {
		return time.Time{}, nil // OPA's verifier refuses any other count
	}
	_, payload, _, err := jwsbb.SplitCompact([]byte(b.Signatures.Signatures[0]))
	if err != nil {
		return time.Time{}, sidecar.Invalid("bundle", "signature: %v", err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(string(payload))
	if err != nil {
		return time.Time{}, sidecar.Invalid("bundle", "signature payload: %v", err)
	}
	var ds bundle.DecodedSignature
	if err := json.Unmarshal(raw, &ds); err != nil {
		return time.Time{}, sidecar.Invalid("bundle", "signature claims: %v", err)
	}
	if ds.IssuedAt == 0 {
		return time.Time{}, nil
	}
	return time.Unix(ds.IssuedAt, 0).UTC(), nil
}

// VerifyBundleFile reads and verifies a signed bundle file; an unsigned
// bundle is an error even though ReadBundle alone would say so too, so the
// message names the actual problem.
func VerifyBundleFile(path string, opts ReadOptions) (*bundle.Bundle, error) {
	if opts.PublicKey == "" {
		return nil, sidecar.Invalid("public_key", "a public key is required to verify")
	}
	b, err := ReadBundleFile(path, opts)
	if err != nil {
		return nil, err
	}
	if len(b.Signatures.Signatures) == 0 {
		return nil, sidecar.Invalid("bundle", "%v", errNoSignature)
	}
	return b, nil
}
