package policy

import (
	"io/fs"
	"path"
	"strings"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/deputyhq/deputy/sidecar"
)

// misreadData reports whether the file at rel, a slash-separated path
// inside a policy directory or bundle, is data that OPA's two loaders read
// apart. Its file loader (policy.paths, deputy policy check and test,
// deputy bundle build) reads every JSON and YAML file as data; its bundle
// reader (policy.bundle_file and bundle_url, a bundle directory or
// tarball) reads only data.json, data.yaml and data.yml, and passes over
// the rest without a word. Rules kept in roles.json would hold when the
// directory is served one way and vanish the other. Hidden files and
// directories are left out: the file loader never reads them, and a
// bundle's .manifest and .signatures.json live there.
func misreadData(rel string) bool {
	rel = strings.Trim(rel, "/")
	for _, part := range strings.Split(rel, "/") {
		if strings.HasPrefix(part, ".") {
			return false
		}
	}
	switch path.Ext(rel) {
	case ".json", ".yaml", ".yml":
		return !bundle.IsStructuredDoc(rel)
	}
	return false
}

// misreadError refuses the files misreadData found, naming them.
func misreadError(field string, files []string) error {
	if len(files) == 0 {
		return nil
	}
	return sidecar.Invalid(field, "%s: data in a file not named data.json, which a bundle does not read while a policy directory does, so its rules would hold one way and not the other: merge it into the data.json of its directory, or name it data.json where there is none", strings.Join(files, ", "))
}

// dirFilter is the filter every read of policy directories through OPA's
// file loader goes through: it skips hidden files and directories, and
// test modules unless tests is set, and collects the files misreadData
// finds inside a directory. A file named on its own (depth 0) is data at
// the root either way, and `deputy bundle build` packs it as data.json.
type dirFilter struct {
	tests   bool
	misread []string
}

func (f *dirFilter) skip(abspath string, info fs.FileInfo, depth int) bool {
	if hidden(abspath, info, depth) || (!f.tests && testModule(info)) {
		return true
	}
	if depth > 0 && !info.IsDir() && misreadData(info.Name()) {
		f.misread = append(f.misread, abspath)
		return true
	}
	return false
}

func (f *dirFilter) err(field string) error { return misreadError(field, f.misread) }

// bundleFiles passes a bundle's files on to OPA's bundle reader and
// collects those misreadData finds, which the reader would skip.
type bundleFiles struct {
	bundle.DirectoryLoader
	misread []string
}

func (b *bundleFiles) NextFile() (*bundle.Descriptor, error) {
	f, err := b.DirectoryLoader.NextFile()
	if err == nil && misreadData(f.Path()) {
		b.misread = append(b.misread, strings.TrimPrefix(f.Path(), "/"))
	}
	return f, err
}
