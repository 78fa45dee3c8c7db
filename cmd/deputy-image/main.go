// Command deputy-image builds Deputy's OCI image without a container
// engine: a root file system layer (users, CA certificates, /tmp) and a
// layer with the static binary and the shipped policies, on no base image,
// so nothing but the Go module proxy and Debian packages is needed. The
// result is the image the Dockerfile describes: same paths, user, entry
// point and labels (image_test.go holds the two together).
//
// It writes an OCI image layout (push it with `crane push` or
// `skopeo copy oci:...`) and a tarball that `docker load` reads.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

func main() {
	var (
		spec    Spec
		created string
	)
	flag.StringVar(&spec.Binary, "binary", "", "static linux deputy binary to put in the image (required)")
	flag.StringVar(&spec.Policies, "policies", "policies", "directory of shipped policies, copied to "+PoliciesDir)
	flag.StringVar(&spec.CACerts, "ca-certs", DefaultCACerts, "PEM bundle of CA certificates (Debian's ca-certificates)")
	flag.StringVar(&spec.Version, "version", "", "image version: the org.opencontainers.image.version label (required)")
	flag.StringVar(&spec.Revision, "revision", "", "source commit: the org.opencontainers.image.revision label (required)")
	flag.StringVar(&spec.Arch, "arch", runtime.GOARCH, "architecture the binary was built for")
	flag.StringVar(&spec.Repository, "repository", DefaultRepository, "image name the tarball and layout are tagged with")
	flag.StringVar(&created, "created", os.Getenv("SOURCE_DATE_EPOCH"), "creation time in Unix seconds (the commit time keeps builds reproducible)")
	layout := flag.String("oci-layout", "", "write an OCI image layout to this directory (replaced)")
	tarball := flag.String("tarball", "", "write a `docker load` tarball to this file")
	flag.Parse()

	if created != "" {
		sec, err := strconv.ParseInt(created, 10, 64)
		if err != nil {
			fail(fmt.Errorf("-created: not Unix seconds: %q", created))
		}
		spec.Created = time.Unix(sec, 0).UTC()
	}
	if *layout == "" && *tarball == "" {
		fail(fmt.Errorf("nothing to write: give -oci-layout, -tarball or both"))
	}
	img, err := Build(spec)
	if err != nil {
		fail(err)
	}
	if err := Write(img, spec, *layout, *tarball); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "deputy-image:", err)
	os.Exit(1)
}
