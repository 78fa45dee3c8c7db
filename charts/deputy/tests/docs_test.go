package tests

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/strvals"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// block is one fenced code block of a Markdown file.
type block struct {
	lang string
	line int
	text string
}

func fencedBlocks(t *testing.T, path string) []block {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []block
	var cur *block
	var b strings.Builder
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			if cur == nil {
				cur = &block{lang: strings.TrimPrefix(line, "```"), line: n}
				b.Reset()
			} else {
				cur.text = b.String()
				out = append(out, *cur)
				cur = nil
			}
			continue
		}
		if cur != nil {
			b.WriteString(line + "\n")
		}
	}
	return out
}

// helmCommands returns the `helm install` and `helm template` command lines
// of a shell block, continuation lines joined.
func helmCommands(sh string) []string {
	var cmds []string
	joined := strings.ReplaceAll(sh, "\\\n", " ")
	for _, l := range strings.Split(joined, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "helm install ") || strings.HasPrefix(l, "helm template ") {
			cmds = append(cmds, l)
		}
	}
	return cmds
}

// Every chart install docs/deploy.md shows renders: each `helm install` or
// `helm template` command with its --set values, and each values block
// over the smallest install. A documented command that would fail, or
// start a Deputy with no identity provider, fails here first.
func TestDeployDocRenders(t *testing.T) {
	c := loadChart(t)
	blocks := fencedBlocks(t, filepath.Join(chartDir, "..", "..", "docs", "deploy.md"))
	var commands, valueBlocks int
	for _, b := range blocks {
		switch b.lang {
		case "sh":
			for _, cmd := range helmCommands(b.text) {
				commands++
				t.Run(cmd, func(t *testing.T) {
					fields := strings.Fields(cmd)
					if fields[3] != "charts/deputy" {
						t.Fatalf("installs %s, not charts/deputy", fields[3])
					}
					vals := map[string]any{}
					for i := 4; i < len(fields); i++ {
						switch fields[i] {
						case "--set":
							i++
							if err := strvals.ParseInto(fields[i], vals); err != nil {
								t.Fatalf("--set %s: %v", fields[i], err)
							}
						case "-n", "--namespace":
							i++
						case "|":
							i = len(fields)
						default:
							t.Fatalf("flag %s: the test reads --set and -n only", fields[i])
						}
					}
					out, err := renderValues(c, vals, true)
					if err != nil {
						t.Fatalf("line %d: %v", b.line, err)
					}
					m := decode(t, out)
					// (The release is always named shop here.)
					raw := m.get(t, "ConfigMap", "shop-deputy-config").(*corev1.ConfigMap).Data["config.yaml"]
					var cfg map[string]any
					if err := yaml.Unmarshal([]byte(raw), &cfg); err != nil {
						t.Fatal(err)
					}
					if _, ok := lookup(cfg, "identity.issuer_urls"); !ok {
						t.Errorf("line %d: the documented install names no identity issuer: Deputy would refuse to start", b.line)
					}
				})
			}
		case "yaml":
			var vals map[string]any
			if err := yaml.Unmarshal([]byte(b.text), &vals); err != nil {
				t.Fatalf("docs/deploy.md:%d: %v", b.line, err)
			}
			if !chartValues(c.Values, vals) {
				continue // an Envoy or Deputy config, not chart values
			}
			valueBlocks++
			t.Run("values block at line "+strconv.Itoa(b.line), func(t *testing.T) {
				// A fragment shows one setting; the install it joins names
				// the application and its identity issuer.
				base := map[string]any{"app": map[string]any{"image": map[string]any{"repository": "registry.example.com/storefront"}},
					"identity": map[string]any{"issuerURLs": []any{"https://login.example.com/realms/shop"}, "audiences": []any{"storefront"}}}
				vals = chartutil.CoalesceTables(vals, base)
				out, err := renderValues(c, vals, true)
				if err != nil {
					t.Fatalf("line %d: %v", b.line, err)
				}
				decode(t, out)
				// An unknown flag stops `deputy serve` at start.
				args, _ := lookup(vals, "deputy.extraArgs")
				list, _ := args.([]any)
				for _, a := range list {
					flag, _, _ := strings.Cut(fmt.Sprint(a), "=")
					if !strings.Contains(serveHelp(t), "  "+flag+" ") {
						t.Errorf("line %d: deputy.extraArgs %s: deputy serve has no such flag", b.line, flag)
					}
				}
			})
		}
	}
	if commands < 3 || valueBlocks < 2 {
		t.Fatalf("found %d helm commands and %d values blocks in docs/deploy.md: the parser lost some", commands, valueBlocks)
	}
}

// chartValues reports whether every top-level key of vals is a chart value.
func chartValues(chart, vals map[string]any) bool {
	if len(vals) == 0 {
		return false
	}
	for k := range vals {
		if _, ok := chart[k]; !ok {
			return false
		}
	}
	return true
}

// serveHelp is `deputy serve --help`, which lists every flag.
func serveHelp(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(deputyBinary(t), "serve", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("deputy serve --help: %v\n%s", err, out)
	}
	return string(out)
}
