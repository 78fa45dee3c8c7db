package tests

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	yamlv3 "go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
)

// deputy.config.grpc.max_recv_msg_bytes renders only in a form Deputy
// reads: its loader takes the setting's text in config.yaml as a decimal
// integer (strconv.ParseInt, base 10: a sign allowed, leading zeros read
// as decimal, no unit, no exponent, no fraction) and refuses 0, which it
// would take for unset. The chart follows the same number for the body's
// bound: a limit renders at exactly that number less 256 KiB and no more.
// Any other value fails the render, naming the setting, instead of
// rendering a config Deputy refuses when the pod starts.
func TestGRPCMaxRecvMsgBytesRendersOnlyAsDeputyReadsIt(t *testing.T) {
	tests := []struct {
		name, value string
		want        int64  // the number Deputy reads; 0: refused
		refusal     string // the refusal's mention
	}{
		{"a number", "5000000", 5000000, ""},
		{"a string of digits", "'5000000'", 5000000, ""},
		{"a sign", "'+5000000'", 5000000, ""},
		{"leading zeros, decimal", "'05000000'", 5000000, ""},
		{"an integral number with an exponent", "4.5e6", 4500000, ""},
		{"a unit", "'4MiB'", 0, `Deputy cannot read "4MiB" as a number of bytes`},
		{"a fraction", "4500000.5", 0, `Deputy cannot read "4500000.5"`},
		{"an exponent in a string", "'4.5e6'", 0, `Deputy cannot read "4.5e6"`},
		{"underscores", "'5_000_000'", 0, `Deputy cannot read "5_000_000"`},
		{"hexadecimal", "'0x500000'", 0, `Deputy cannot read "0x500000"`},
		{"spaces", "' 5000000'", 0, `Deputy cannot read " 5000000"`},
		{"an empty string", "''", 0, `Deputy cannot read "" as a number of bytes`},
		{"a boolean", "true", 0, `Deputy cannot read "true"`},
		{"a map", "{bytes: 5000000}", 0, "Deputy cannot read"},
		{"a number too large for JSON's digits", "1e21", 0, `Deputy cannot read "1e+21"`},
		{"past a 64-bit integer", "'9223372036854775808'", 0, "past the largest integer Deputy reads"},
		{"zero", "0", 0, "Deputy reads 0 as unset and refuses it"},
		{"zero as a string", "'000'", 0, "Deputy reads 0 as unset and refuses it"},
		{"negative", "'-5000000'", 0, "leaves no room for a body"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			values := func(body int64) string {
				return fmt.Sprintf("{%s, envoy: {extAuthz: {maxRequestBytes: %d}}, deputy: {config: {grpc: {max_recv_msg_bytes: %s}}}}", boundsBase, body, tc.value)
			}
			if tc.want == 0 {
				err := renderErr(t, values(8192))
				if err == nil || !strings.Contains(err.Error(), tc.refusal) || !strings.Contains(err.Error(), "deputy.config.grpc.max_recv_msg_bytes") {
					t.Fatalf("err = %v, want a refusal naming deputy.config.grpc.max_recv_msg_bytes and %q", err, tc.refusal)
				}
				return
			}
			bound := tc.want - checkRequestHeadroom
			m := renderInline(t, values(bound))
			var doc yamlv3.Node
			if err := yamlv3.Unmarshal([]byte(m.get(t, "ConfigMap", "shop-deputy-config").(*corev1.ConfigMap).Data["config.yaml"]), &doc); err != nil {
				t.Fatal(err)
			}
			text, ok := scalarAt(doc.Content[0], "grpc", "max_recv_msg_bytes")
			if !ok {
				t.Fatal("config.yaml sets no grpc.max_recv_msg_bytes")
			}
			// As Deputy's loader reads it (cmd/deputy/loader.go, setValue).
			if n, err := strconv.ParseInt(text, 10, 64); err != nil || n != tc.want {
				t.Fatalf("config.yaml's grpc.max_recv_msg_bytes %q reads as %d, %v; want %d", text, n, err, tc.want)
			}
			if err := renderErr(t, values(bound+1)); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("at most %d", bound)) {
				t.Fatalf("maxRequestBytes %d rendered (err %v): the chart's bound does not follow %d", bound+1, err, tc.want)
			}
		})
	}
}

// scalarAt is the text of the scalar at keys under mapping n.
func scalarAt(n *yamlv3.Node, keys ...string) (string, bool) {
	for _, k := range keys {
		if n.Kind != yamlv3.MappingNode {
			return "", false
		}
		var next *yamlv3.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			return "", false
		}
		n = next
	}
	return n.Value, n.Kind == yamlv3.ScalarNode
}
