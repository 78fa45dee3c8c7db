package policy

import (
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/loader/extension"

	"github.com/deputyhq/deputy/sidecar"
)

// misreadData reports whether the file at rel, a slash-separated path
// inside a policy directory or bundle, is data that OPA's two loaders read
// apart. Its file loader (policy.paths, deputy policy check and test,
// deputy bundle build) reads every JSON and YAML file as data; its bundle
// reader (policy.bundle_file and bundle_url, a bundle directory or
// tarball) reads only data.json, data.yaml and data.yml, and passes over
// the rest without a word. Rules kept in roles.json would hold when the
// directory is served one way and vanish the other. Hidden paths are
// hiddenPolicy's: neither loader reads roles.json there.
func misreadData(rel string) bool {
	if hiddenPath(rel) {
		return false
	}
	switch path.Ext(rel) {
	case ".json", ".yaml", ".yml":
		return !bundle.IsStructuredDoc(rel)
	}
	return false
}

// hiddenPolicy reports whether the file at rel, a slash-separated path
// inside a policy directory or bundle, is a Rego module or a data file
// (data.json, data.yaml, data.yml) under a hidden name: OPA's file loader
// passes over hidden files and directories, its bundle reader loads them.
// deputy/authz/.override.rego, or .extra/data.json under the key .extra,
// would hold for a bundle and not for policy.paths, policy check and test
// or bundle build. Other hidden files (a bundle's /.manifest and
// /.signatures.json, .regal/config.yaml) are neither Rego nor data.
func hiddenPolicy(rel string) bool {
	if !hiddenPath(rel) {
		return false
	}
	base := path.Base(rel)
	return path.Ext(base) == ".rego" || base == "data.json" || bundle.IsYAMLDataFile(base)
}

// strayManifest reports whether the file at rel, a slash-separated path
// inside a policy directory or bundle, is one OPA's bundle reader takes
// for the bundle's manifest or signatures though it is not the root's
// /.manifest or /.signatures.json: the reader takes any path ending in
// ".manifest" (deputy/authz/release.manifest) or ".manifest.pb" as the
// manifest, whose roots, revision and rego_version then govern the
// bundle, and any .signatures.json as the signatures, while the file
// loader reads neither.
func strayManifest(rel string) bool {
	parts := strings.Split(strings.Trim(rel, "/"), "/")
	parts = slices.DeleteFunc(parts, func(p string) bool { return p == "." || p == "" })
	rel = strings.Join(parts, "/")
	switch {
	case rel == bundle.ManifestExt, rel == ".signatures.json":
		return false
	case strings.HasSuffix(rel, bundle.ManifestExt), strings.HasSuffix(rel, bundle.ManifestProtoExt):
		return true
	}
	return bundle.IsSignaturesFile(rel)
}

// hiddenPath reports whether a part of rel names a hidden file or
// directory. A "." part is none: `tar -czf b.tar.gz -C dir .` names every
// file ./deputy/...
func hiddenPath(rel string) bool {
	for part := range strings.SplitSeq(strings.Trim(rel, "/"), "/") {
		if part != "." && strings.HasPrefix(part, ".") {
			return true
		}
	}
	return false
}

// layoutCheck collects the files of a policy directory or bundle that
// OPA's two loaders would read apart, for the error that refuses them:
// both loaders go through it, so they refuse the same files.
type layoutCheck struct {
	hidden   []string
	misread  []string
	manifest []string
}

// refuse records the file at rel, named name in the error, when
// hiddenPolicy or misreadData finds it, and reports whether it did.
func (c *layoutCheck) refuse(rel, name string) bool {
	switch {
	case hiddenPolicy(rel):
		c.hidden = append(c.hidden, name)
	case misreadData(rel):
		c.misread = append(c.misread, name)
	case strayManifest(rel):
		c.manifest = append(c.manifest, name)
	default:
		return false
	}
	return true
}

// err refuses the files recorded, naming them; nil when there are none.
func (c *layoutCheck) err(field string) error {
	if len(c.hidden) > 0 {
		return sidecar.Invalid(field, "%s: Rego or data under a hidden name (starting with \".\"), which a bundle reads while a policy directory does not, so its rules would hold one way and not the other: move it out of the hidden path, or delete it", strings.Join(c.hidden, ", "))
	}
	if len(c.manifest) > 0 {
		return sidecar.Invalid(field, "%s: a manifest or signatures file other than the root's /.manifest and /.signatures.json, which a bundle reads as its own while a policy directory does not, so its roots, revision and Rego version would hold one way and not the other: delete it, or move it to the root", strings.Join(c.manifest, ", "))
	}
	if len(c.misread) > 0 {
		return sidecar.Invalid(field, "%s: data in a file not named data.json, which a bundle does not read while a policy directory does, so its rules would hold one way and not the other: merge it into the data.json of its directory, or name it data.json where there is none", strings.Join(c.misread, ", "))
	}
	return nil
}

// dirFilter is the filter every read of policy directories through OPA's
// file loader goes through: it skips hidden files, files of a type the
// loader does not keep (loadedType) and test modules unless tests is set,
// and refuses what layoutCheck finds inside a directory. It walks hidden
// directories, to find the Rego and data they hold. A file named on its
// own (depth 0) is read as named: data at the root either way, which
// `deputy bundle build` packs as data.json. A watch digests what it
// reads and refuses (watched), and nothing else.
type dirFilter struct {
	layoutCheck
	tests bool
	// values, when set, counts the values of the JSON and YAML files the
	// loader reads, which it parses whole, and checks the bundle
	// tarballs it reads as ReadBundle does (up to maxBytes each): the
	// first file past a bound is refused (tooCostly), and nothing more is
	// read. A watch's filter has none: it digests files, never parses
	// them.
	values    *valueBudget
	maxBytes  int64
	tooCostly error
}

func (f *dirFilter) skip(abspath string, info fs.FileInfo, depth int) bool {
	if f.tooCostly != nil {
		return true
	}
	if depth > 0 && info.IsDir() {
		return kubeletCopy(abspath, info)
	}
	if depth == 0 {
		return !f.tests && testModule(info) || f.costly(abspath, info)
	}
	// depth counts the parts of abspath below the path the loader was given.
	parts := strings.Split(filepath.ToSlash(abspath), "/")
	rel := strings.Join(parts[max(0, len(parts)-depth):], "/")
	return f.refuse(rel, abspath) || hiddenPath(rel) || !loadedType(rel) || (!f.tests && testModule(info)) || f.costly(abspath, info)
}

// costly reports whether the file at abspath, which the loader is about
// to read, is past a bound of f.values, recording the refusal.
func (f *dirFilter) costly(abspath string, info fs.FileInfo) bool {
	if f.values == nil || info.IsDir() {
		return false
	}
	var err error
	switch {
	case info.Size() > f.maxBytes:
		err = errTooLarge(f.maxBytes)
	case strings.HasSuffix(abspath, ".tar.gz"):
		err = checkTarballFile(abspath, f.maxBytes, f.values)
	default:
		err = checkFile(f.values, abspath, abspath, pathParse(abspath), info.Size())
	}
	f.tooCostly = err
	return err != nil
}

// err refuses the files layoutCheck recorded, or the one past a bound of
// values; nil when there are none.
func (f *dirFilter) err(field string) error {
	if err := f.layoutCheck.err(field); err != nil {
		return err
	}
	return f.tooCostly
}

// loadedType reports whether OPA's file loader keeps a file of this name
// found inside a directory: Rego, JSON, YAML, a bundle tarball, or a type
// a registered extension parses. It reads any other file whole and then
// drops it; the filter passes over it unread, so a large file beside the
// policies (a GeoIP database, a log) is neither read nor digested by a
// watch nor counted toward policy.max_bundle_bytes.
func loadedType(name string) bool {
	ext := path.Ext(name)
	return ext == ".rego" || ext == ".json" || bundle.IsYAMLFile(name) ||
		strings.HasSuffix(name, ".tar.gz") || extension.FindExtension(ext) != nil
}

// watched tells fingerprint what of the file or directory at abspath the
// loader's result depends on, by the loader's own filter: the content of
// what it reads (and the directories it walks), the name of what it
// refuses, nothing of what it passes over.
func (f *dirFilter) watched(abspath string, info fs.FileInfo, depth int) digestOf {
	refused := f.refused()
	switch {
	case !f.skip(abspath, info, depth):
		return digestContent
	case f.refused() > refused:
		return digestName
	}
	return digestNothing
}

// refused counts the files refused so far.
func (c *layoutCheck) refused() int { return len(c.hidden) + len(c.misread) + len(c.manifest) }

// kubeletCopy reports whether the directory at abspath is one the kubelet
// keeps in a volume it mounts from a ConfigMap or Secret: the files sit in
// a ..<timestamp> directory behind the ..data symlink, and each visible
// name is a symlink through ..data, so the file loader reads them through
// the visible names, once. Keys cannot start with "..": where ..data is a
// symlink, only the kubelet writes such names. A bundle directory in such
// a volume is read through the visible names too (bundleDir).
func kubeletCopy(abspath string, info fs.FileInfo) bool {
	if !strings.HasPrefix(info.Name(), "..") {
		return false
	}
	data, err := os.Lstat(filepath.Join(filepath.Dir(abspath), "..data"))
	return err == nil && data.Mode()&fs.ModeSymlink != 0
}

// bundleFiles passes a bundle's files on to OPA's bundle reader and
// records those layoutCheck finds, which the reader would read apart from
// the file loader.
type bundleFiles struct {
	bundle.DirectoryLoader
	layoutCheck
}

func (b *bundleFiles) NextFile() (*bundle.Descriptor, error) {
	f, err := b.DirectoryLoader.NextFile()
	if err == nil {
		b.refuse(f.Path(), strings.TrimPrefix(f.Path(), "/"))
	}
	return f, err
}
