package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// docs/configuration.md is generated from the same definitions as the
// flags; this fails whenever a setting, its description or its default
// changes without regenerating it.
func TestConfigReferenceIsCurrent(t *testing.T) {
	var want bytes.Buffer
	writeReference(&want)
	got, err := os.ReadFile(filepath.Join("..", "..", referencePath))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("%s is stale: run `go generate ./cmd/deputy` and commit it", referencePath)
	}
}

func TestConfigReferenceCoversEverySetting(t *testing.T) {
	var doc bytes.Buffer
	writeReference(&doc)
	for _, s := range settings(defaultConfig()) {
		if s.section && !s.yamlOnly {
			if !strings.Contains(s.path, ".") && !strings.Contains(doc.String(), "\n## `"+s.path+"`\n") {
				t.Errorf("section %s has no heading", s.path)
			}
			continue
		}
		row := "| `" + s.path + "` |"
		if !strings.Contains(doc.String(), row) {
			t.Errorf("%s has no row", s.path)
		}
		if !s.yamlOnly && !s.section && !strings.Contains(doc.String(), "`--"+flagName(s.path)+"`") {
			t.Errorf("%s: flag not named", s.path)
		}
	}
	for _, want := range []string{"`30s with bundle_url, else 2s`", "`DEPUTY_REDIS_ADDRS`", "| strings |", "| duration |"} {
		if !strings.Contains(doc.String(), want) {
			t.Errorf("reference lacks %s", want)
		}
	}
}
