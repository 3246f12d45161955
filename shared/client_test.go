package shared_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ctxgate/ctxgate/shared"
)

func TestRedisDown(t *testing.T) {
	m, c, reg := start(t, "ctxgate:")
	if got := value(t, reg, "ctxgate_redis_up"); got != 1 {
		t.Fatalf("ctxgate_redis_up = %v after a good ping, want 1", got)
	}
	m.Close()
	if _, _, err := c.Allow(context.Background(), "docs", "alice", []shared.Bucket{{RPS: 1, Burst: 1}}); err == nil {
		t.Fatal("Allow with Redis gone returned no error")
	}
	if got := value(t, reg, "ctxgate_redis_up"); got != 0 {
		t.Errorf("ctxgate_redis_up = %v with Redis gone, want 0", got)
	}
	c.Fallback(shared.FeatureRateLimit, net.ErrClosed)
	if got := value(t, reg, "ctxgate_redis_fallback_total"); got != 1 {
		t.Errorf("ctxgate_redis_fallback_total = %v, want 1", got)
	}
}

// value reads a gauge or counter from the registry: the sum of its
// series (ctxgate_redis_fallback_total has one per feature).
func value(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) > 0 {
			sum := 0.0
			for _, m := range f.GetMetric() {
				sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
			return sum
		}
	}
	t.Fatalf("no series %s", name)
	return 0
}

func TestNew(t *testing.T) {
	t.Run("unreachable starts, down", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close() // nothing listens there now
		reg := prometheus.NewRegistry()
		c, err := shared.New(context.Background(), redisConfig("redis://"+addr+"/0", "x:"), shared.Options{Registerer: reg})
		if err != nil {
			t.Fatalf("New with Redis unreachable: %v, want a start in fallback", err)
		}
		defer c.Close()
		if got := value(t, reg, "ctxgate_redis_up"); got != 0 {
			t.Errorf("ctxgate_redis_up = %v, want 0", got)
		}
		if got := value(t, reg, "ctxgate_redis_fallback_total"); got != 0 {
			t.Errorf("ctxgate_redis_fallback_total = %v, want a zero series", got)
		}
	})
	t.Run("wrong password is a start-up error", func(t *testing.T) {
		m := miniredis.RunT(t)
		m.RequireAuth("right")
		_, err := shared.New(context.Background(), redisConfig("redis://:wrong@"+m.Addr()+"/0", "x:"), shared.Options{})
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("New with a wrong password = %v, want refused", err)
		}
	})
	t.Run("password file", func(t *testing.T) {
		m := miniredis.RunT(t)
		m.RequireAuth("right")
		file := t.TempDir() + "/password"
		if err := writeFile(file, "right\n"); err != nil {
			t.Fatal(err)
		}
		cfg := redisConfig("redis://"+m.Addr()+"/0", "x:")
		cfg.PasswordFile = file
		c, err := shared.New(context.Background(), cfg, shared.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Ping(context.Background()); err != nil {
			t.Errorf("Ping with the password from the file: %v", err)
		}
	})
	t.Run("missing password file", func(t *testing.T) {
		cfg := redisConfig("redis://127.0.0.1:1/0", "x:")
		cfg.PasswordFile = t.TempDir() + "/none"
		if _, err := shared.New(context.Background(), cfg, shared.Options{}); err == nil || !strings.Contains(err.Error(), "redis.password_file") {
			t.Errorf("New = %v, want a redis.password_file error", err)
		}
	})
}

func writeFile(path, text string) error { return os.WriteFile(path, []byte(text), 0o600) }

// TestFallbackLogBounded: every fallback is counted, but while Redis is
// down the log gets one line a minute, carrying the count it left out.
func TestFallbackLogBounded(t *testing.T) {
	m := miniredis.RunT(t)
	now := time.Unix(1_800_000_000, 0)
	var logs strings.Builder
	reg := prometheus.NewRegistry()
	c, err := shared.New(context.Background(), redisConfig("redis://"+m.Addr()+"/0", "x:"), shared.Options{
		Logger:     slog.New(slog.NewJSONHandler(&logs, nil)),
		Registerer: reg,
		Now:        func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 3 {
		c.Fallback(shared.FeatureRateLimit, net.ErrClosed)
	}
	now = now.Add(time.Minute)
	c.Fallback(shared.FeatureRateLimit, net.ErrClosed)
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d log lines for 4 fallbacks over a minute, want 2:\n%s", len(lines), logs.String())
	}
	if !strings.Contains(lines[1], `"unlogged_since_last":2`) {
		t.Errorf("second line does not count the 2 fallbacks left out: %s", lines[1])
	}
	if got := value(t, reg, "ctxgate_redis_fallback_total"); got != 4 {
		t.Errorf("ctxgate_redis_fallback_total = %v, want 4", got)
	}
}

// TestRoundTripMetrics: every round trip is counted by operation and
// result, and timed by operation.
func TestRoundTripMetrics(t *testing.T) {
	m, c, reg := start(t, "ctxgate:")
	if _, _, err := c.Allow(context.Background(), "docs", "alice", []shared.Bucket{{RPS: 1, Burst: 1}}); err != nil {
		t.Fatal(err)
	}
	m.Close()
	if _, _, err := c.Allow(context.Background(), "docs", "alice", []shared.Bucket{{RPS: 1, Burst: 1}}); err == nil {
		t.Fatal("Allow with Redis gone returned no error")
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, s := range f.GetMetric() {
			labels := []string{f.GetName()}
			for _, l := range s.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := strings.Join(labels, ",")
			switch f.GetName() {
			case "ctxgate_redis_round_trips_total":
				got[key] = s.GetCounter().GetValue()
			case "ctxgate_redis_round_trip_seconds":
				got[key] = float64(s.GetHistogram().GetSampleCount())
			}
		}
	}
	want := map[string]float64{
		"ctxgate_redis_round_trips_total,op=ping,result=ok":          1,
		"ctxgate_redis_round_trips_total,op=rate_limit,result=ok":    1,
		"ctxgate_redis_round_trips_total,op=rate_limit,result=error": 1,
		"ctxgate_redis_round_trip_seconds,op=ping":                   1,
		"ctxgate_redis_round_trip_seconds,op=rate_limit":             2,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("round trip series (-want +got):\n%s", diff)
	}
}
