// Package deploy holds ctxgate's deployment artefacts, and its tests check
// them: the Helm chart (helm/ctxgate), the container image's default
// configuration (docker/ctxgate.yaml, used by the repository's Dockerfile),
// the Grafana dashboard (grafana/ctxgate.json) and the Prometheus alert
// rules (prometheus/rules.yaml).
//
// The package has no Go API. Its tests build the gateway with the
// Dockerfile's own build command, run it in the image's layout as the
// image's user, render the chart for several value sets and decode every
// manifest strictly into the Kubernetes API types, pass each rendered
// configuration and policy through the real binary (`ctxgate check`,
// `ctxgate policy eval`), check the rules with promtool, and scrape a
// running gateway for every metric the dashboard and the rules query.
package deploy
