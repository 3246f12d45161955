package gateway

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ctxgate/ctxgate/upstream"
)

// stdioCollector reads each stdio upstream's process counts at scrape
// time, so the upstream package stays free of Prometheus.
type stdioCollector struct{ pool *upstream.Pool }

var (
	stdioRunningDesc = prometheus.NewDesc("ctxgate_stdio_processes",
		"Processes a stdio upstream runs now (one per client session).", []string{"upstream"}, nil)
	stdioEndedDesc = prometheus.NewDesc("ctxgate_stdio_processes_total",
		"Processes a stdio upstream started, and those that crashed (ended on their own or broke the stdio framing) or were reaped idle.",
		[]string{"upstream", "event"}, nil)
)

func (c stdioCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- stdioRunningDesc
	ch <- stdioEndedDesc
}

func (c stdioCollector) Collect(ch chan<- prometheus.Metric) {
	for _, up := range c.pool.All() {
		st := up.Stdio
		if st == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(stdioRunningDesc, prometheus.GaugeValue, float64(st.Running()), up.Name)
		for event, n := range map[string]int64{"started": st.Started.Load(), "crashed": st.Crashed.Load(), "reaped": st.Reaped.Load()} {
			ch <- prometheus.MustNewConstMetric(stdioEndedDesc, prometheus.CounterValue, float64(n), up.Name, event)
		}
	}
}
