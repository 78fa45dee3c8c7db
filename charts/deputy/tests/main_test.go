package tests

import (
	"io"
	"log"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	// The loader notes, on every load, that files/policies links to the
	// repository's policies: true and intended.
	log.SetOutput(io.Discard)
	os.Exit(m.Run())
}
