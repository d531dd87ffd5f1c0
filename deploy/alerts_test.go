package deploy_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/alauda/costmeter/internal/testenv"
)

// TestAlertRules: the documented alert rules are valid Prometheus rules
// (promtool check rules) and fire as documented — a cluster silent for 15
// minutes, yesterday under 99% covered — on the unit tests beside them
// (promtool test rules).
func TestAlertRules(t *testing.T) {
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Fatalf("promtool not found in PATH: %s", testenv.PrometheusInstall)
	}
	for _, args := range [][]string{
		{"check", "rules", "cost-alerts.yaml"},
		{"test", "rules", "cost-alerts_test.yaml"},
	} {
		cmd := exec.Command("promtool", args...)
		cmd.Dir = "prometheus"
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
