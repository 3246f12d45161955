package gateway

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRPCErrorTypeIsBounded(t *testing.T) {
	tests := []struct {
		code int64
		want string
	}{
		{code: -32602, want: "-32602"},
		{code: -32768, want: "-32768"},
		{code: -31010, want: "-31010"},
		{code: -31000, want: "-31000"},
		{code: -30999, want: labelOther},
		{code: -32769, want: labelOther},
		{code: 0, want: labelOther},
		{code: 1 << 40, want: labelOther},
	}
	for _, tt := range tests {
		if got := rpcErrorType(tt.code); got != tt.want {
			t.Errorf("rpcErrorType(%d) = %q, want %q", tt.code, got, tt.want)
		}
	}
}

// TestPolicyReloaded checks the reload hook's series: the counters, and a
// revision gauge that only ever has the current revision.
func TestPolicyReloaded(t *testing.T) {
	m := NewMetrics()
	m.initRoutes(nil)
	m.setPolicyRevision("rev-a")
	m.PolicyReloaded("rev-b", nil)
	m.PolicyReloaded("rev-b", errors.New("rego_parse_error"))
	m.PolicyReloaded("rev-c", nil)
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, metric := range f.GetMetric() {
			key := f.GetName()
			for _, l := range metric.GetLabel() {
				key += " " + l.GetName() + "=" + l.GetValue()
			}
			switch f.GetName() {
			case "ctxgate_policy_reloads_total":
				got[key] = metric.GetCounter().GetValue()
			case "ctxgate_policy_revision_info":
				got[key] = metric.GetGauge().GetValue()
			}
		}
	}
	want := map[string]float64{
		"ctxgate_policy_reloads_total result=ok":      2,
		"ctxgate_policy_reloads_total result=failed":  1,
		"ctxgate_policy_revision_info revision=rev-c": 1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("policy series (-want +got):\n%s", diff)
	}
}
