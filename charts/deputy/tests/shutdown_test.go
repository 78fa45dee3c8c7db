package tests

import (
	"cmp"
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

const baseValues = "app: {image: {repository: x}}\nidentity: {anonymousOnly: true}\n"

// The pod's grace period covers what Deputy may take to stop after
// SIGTERM (shutdown_timeout, then decision_log.flush_timeout, then
// metrics.final_scrape_wait when the flush lost records) with a margin:
// SIGKILL before that would cut the decision log's flush. Unset, it is
// derived from deputy.config; set shorter, the render fails.
func TestTerminationGracePeriodCoversTheShutdown(t *testing.T) {
	c := loadChart(t)
	for _, tc := range []struct {
		name, values string
		want         int64
	}{
		{"defaults", "", 15 + 5 + 15 + 5},
		{"longer shutdown", "deputy: {config: {shutdown_timeout: 30s}}", 30 + 5 + 15 + 5},
		{"every timeout set", "deputy: {config: {shutdown_timeout: 10s, decision_log: {flush_timeout: 1m30s}, metrics: {final_scrape_wait: 0}}}", 10 + 90 + 0 + 5},
		{"fractions round up", "deputy: {config: {shutdown_timeout: 500ms, decision_log: {flush_timeout: 2.2s}, metrics: {final_scrape_wait: 1s}}}", 4 + 5},
		{"operator's own, long enough", "terminationGracePeriodSeconds: 60", 60},
		// Deputy reads a zero shutdown_timeout or flush_timeout as unset,
		// and takes its default; a zero final_scrape_wait is none. Below
		// a nanosecond, Go reads a duration as zero.
		{"zero is Deputy's default", "deputy: {config: {shutdown_timeout: 0s, decision_log: {flush_timeout: 0s}}}", 15 + 5 + 15 + 5},
		{"zero, every spelling", "deputy: {config: {shutdown_timeout: \"0\", decision_log: {flush_timeout: 0.4ns}}}", 15 + 5 + 15 + 5},
		{"zero, a number", "deputy: {config: {shutdown_timeout: 0, decision_log: {flush_timeout: 0ms}}}", 15 + 5 + 15 + 5},
		{"every timeout zero", "deputy: {config: {shutdown_timeout: 0s, decision_log: {flush_timeout: 0h0m}, metrics: {final_scrape_wait: 0s}}}", 15 + 5 + 0 + 5},
		{"a nanosecond is not zero", "deputy: {config: {shutdown_timeout: 1ns, decision_log: {flush_timeout: 1.5ns}, metrics: {final_scrape_wait: 0s}}}", 1 + 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := renderYAML(t, c, baseValues+tc.values)
			if err != nil {
				t.Fatal(err)
			}
			m := decode(t, out)
			pod := m.get(t, "Deployment", "shop-deputy").(*appsv1.Deployment).Spec.Template.Spec
			if pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds != tc.want {
				got := "unset"
				if pod.TerminationGracePeriodSeconds != nil {
					got = fmt.Sprint(*pod.TerminationGracePeriodSeconds)
				}
				t.Fatalf("terminationGracePeriodSeconds = %s, want %d", got, tc.want)
			}
		})
	}
	t.Run("sidecar-only says what the pod needs", func(t *testing.T) {
		out, err := renderYAML(t, c, baseValues+"mode: sidecar-only\nsingleReplica: true\nnetworkPolicy: {podSelector: {app: shop}, ports: [8080]}\ndeputy: {config: {shutdown_timeout: 30s}}\n")
		if err != nil {
			t.Fatal(err)
		}
		cm := decode(t, out).get(t, "ConfigMap", "shop-deputy-sidecar").(*corev1.ConfigMap)
		if got := cm.Data["terminationGracePeriodSeconds"]; got != "55" {
			t.Fatalf("terminationGracePeriodSeconds = %q, want 55", got)
		}
	})
	for _, tc := range []struct{ name, values, want string }{
		// The default grace period of Kubernetes, with a longer shutdown:
		// SIGKILL would come before the flush began.
		{"shorter than the shutdown", "terminationGracePeriodSeconds: 30\ndeputy: {config: {shutdown_timeout: 30s}}", "terminationGracePeriodSeconds 30 is shorter than Deputy may take to stop (55 s"},
		{"shorter than the defaults", "terminationGracePeriodSeconds: 39", "terminationGracePeriodSeconds 39 is shorter"},
		{"shorter than the defaults zero stands for", "terminationGracePeriodSeconds: 20\ndeputy: {config: {shutdown_timeout: 0s, decision_log: {flush_timeout: 0s}}}", "terminationGracePeriodSeconds 20 is shorter than Deputy may take to stop (40 s"},
		{"flag among the extras", "deputy: {extraArgs: [--shutdown-timeout=30s]}", "deputy.extraArgs: --shutdown-timeout is not followed by the pod's terminationGracePeriodSeconds: set shutdown_timeout in deputy.config"},
		{"variable among the extras", "deputy: {extraEnv: [{name: DEPUTY_DECISION_LOG_FLUSH_TIMEOUT, value: 1m}]}", "deputy.extraEnv: DEPUTY_DECISION_LOG_FLUSH_TIMEOUT is not followed"},
		{"unreadable duration", "deputy: {config: {decision_log: {flush_timeout: 5}}}", "deputy.config.decision_log.flush_timeout: the chart cannot read \"5\" as a duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := renderYAML(t, c, baseValues+tc.values); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want the render refused with %q", err, tc.want)
			}
		})
	}
}

// Decision records the sink has not taken when the container stops wait
// in a spool on an emptyDir, which the next start of the container sends:
// bounded so that the spool, with its oldest segment, stays inside the
// emptyDir's sizeLimit (past it the kubelet evicts the pod).
func TestDecisionLogSpoolOnEmptyDir(t *testing.T) {
	c := loadChart(t)
	type spoolConfig struct {
		DecisionLog struct {
			SpoolDir       string `json:"spool_dir"`
			SpoolMaxBytes  int64  `json:"spool_max_bytes"`
			MaxRecordBytes int64  `json:"max_record_bytes"`
		} `json:"decision_log"`
	}
	check := func(t *testing.T, values string, wantMax int64, wantSize string) {
		t.Helper()
		out, err := renderYAML(t, c, baseValues+values)
		if err != nil {
			t.Fatal(err)
		}
		m := decode(t, out)
		var cfg spoolConfig
		if err := yaml.Unmarshal([]byte(m.get(t, "ConfigMap", "shop-deputy-config").(*corev1.ConfigMap).Data["config.yaml"]), &cfg); err != nil {
			t.Fatal(err)
		}
		pod := m.get(t, "Deployment", "shop-deputy").(*appsv1.Deployment).Spec.Template.Spec
		var vol *corev1.Volume
		for i := range pod.Volumes {
			if pod.Volumes[i].Name == "deputy-spool" {
				vol = &pod.Volumes[i]
			}
		}
		var mount string
		for _, vm := range container(t, pod, "deputy").VolumeMounts {
			if vm.Name == "deputy-spool" {
				mount = vm.MountPath
			}
		}
		if wantSize == "" {
			if cfg.DecisionLog.SpoolDir != "" || vol != nil || mount != "" {
				t.Fatalf("spool disabled, yet spool_dir %q, volume %v, mount %q", cfg.DecisionLog.SpoolDir, vol, mount)
			}
			return
		}
		if cfg.DecisionLog.SpoolDir == "" || cfg.DecisionLog.SpoolDir != mount {
			t.Fatalf("spool_dir %q, mounted at %q", cfg.DecisionLog.SpoolDir, mount)
		}
		if vol == nil || vol.EmptyDir == nil || vol.EmptyDir.SizeLimit == nil || !vol.EmptyDir.SizeLimit.Equal(resource.MustParse(wantSize)) {
			t.Fatalf("spool volume %+v, want an emptyDir of %s", vol, wantSize)
		}
		if cfg.DecisionLog.SpoolMaxBytes != wantMax {
			t.Fatalf("spool_max_bytes = %d, want %d", cfg.DecisionLog.SpoolMaxBytes, wantMax)
		}
		// The spool keeps the delivered part of its oldest segment besides
		// its bound: a quarter of it at most, 16 MiB at most, or one record
		// when a record is larger.
		record := cmp.Or(cfg.DecisionLog.MaxRecordBytes, 64<<10)
		if room := wantMax + max(min(wantMax/4, 16<<20), record+1) + 64<<10; room > vol.EmptyDir.SizeLimit.Value() {
			t.Fatalf("a spool of %d bytes may take %d, over its sizeLimit %s", wantMax, room, wantSize)
		}
	}
	t.Run("default", func(t *testing.T) { check(t, "", 96<<20, "128Mi") })
	t.Run("larger", func(t *testing.T) { check(t, "deputy: {spool: {sizeLimit: 1Gi}}", 768<<20, "1Gi") })
	t.Run("bound set in config", func(t *testing.T) {
		check(t, "deputy: {config: {decision_log: {spool_max_bytes: 67108864}}}", 64<<20, "128Mi")
	})
	t.Run("small", func(t *testing.T) { check(t, "deputy: {spool: {sizeLimit: 16Mi}}", 12<<20, "16Mi") })
	t.Run("disabled", func(t *testing.T) { check(t, "deputy: {spool: {enabled: false}}", 0, "") })
	// A segment passes its cap (a quarter of the bound) by one record when
	// the record is larger: a sizeLimit without room for that fails.
	for _, tc := range []struct{ name, values, want string }{
		{"record larger than a segment", "deputy: {spool: {sizeLimit: 1Mi}, config: {decision_log: {max_record_bytes: 524288}}}",
			"decision_log.spool_max_bytes 786432 (three quarters of deputy.spool.sizeLimit) does not fit deputy.spool.sizeLimit (1048576 bytes) with the spool's oldest segment (524289 bytes at most"},
		{"record larger than a segment, bound set", "deputy: {spool: {sizeLimit: 2Mi}, config: {decision_log: {spool_max_bytes: 1572864, max_record_bytes: 524288}}}",
			"deputy.config.decision_log.spool_max_bytes 1572864 does not fit deputy.spool.sizeLimit (2097152 bytes) with the spool's oldest segment (524289 bytes at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := renderYAML(t, c, baseValues+tc.values); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want the render refused with %q", err, tc.want)
			}
		})
	}
	t.Run("bound past the sizeLimit", func(t *testing.T) {
		_, err := renderYAML(t, c, baseValues+"deputy: {config: {decision_log: {spool_max_bytes: 125829120}}}")
		if err == nil || !strings.Contains(err.Error(), "deputy.config.decision_log.spool_max_bytes 125829120 does not fit deputy.spool.sizeLimit") {
			t.Fatalf("err = %v, want the render refused", err)
		}
	})
	t.Run("sidecar-only", func(t *testing.T) {
		out, err := renderYAML(t, c, baseValues+"mode: sidecar-only\nsingleReplica: true\nnetworkPolicy: {podSelector: {app: shop}, ports: [8080]}\n")
		if err != nil {
			t.Fatal(err)
		}
		cm := decode(t, out).get(t, "ConfigMap", "shop-deputy-sidecar").(*corev1.ConfigMap)
		var vols []corev1.Volume
		strictYAML(t, cm.Data["volumes.yaml"], &vols)
		var ctr corev1.Container
		strictYAML(t, cm.Data["container.yaml"], &ctr)
		found := false
		for _, v := range vols {
			found = found || v.Name == "deputy-spool" && v.EmptyDir != nil
		}
		mounted := false
		for _, vm := range ctr.VolumeMounts {
			mounted = mounted || vm.Name == "deputy-spool"
		}
		if !found || !mounted {
			t.Fatalf("spool volume %v, mounted %v", found, mounted)
		}
	})
}
