package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/ctxgate/ctxgate/cache"
	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/shared"
)

// Invalidation: what the cache drops, from wherever the news comes (an
// operator's purge, an upstream's list_changed or resources/updated, a
// context source's event on POST /admin/invalidate or the Redis Stream).
// With redis configured, each is applied here and then published to every
// replica on the same Redis and key prefix (shared/fanout.go), and a
// replica out of step with the published invalidations serves nothing from
// its cache until it is back in step.

// invalidation is one cache invalidation, as applied and as published.
type invalidation struct {
	All      bool        `json:"all,omitempty"`
	Keys     []string    `json:"keys,omitempty"`
	Tags     []string    `json:"tags,omitempty"`
	Prefixes []uriPrefix `json:"prefixes,omitempty"`
	// Pins names upstreams whose tool pins changed (an approval): each
	// replica reads them from Redis again.
	Pins []string `json:"pins,omitempty"`
	// Updated are resources a context source said changed: their
	// subscribers are sent notifications/resources/updated.
	Updated []resourceUpdate `json:"updated,omitempty"`
}

// uriPrefix names the resources of an upstream whose URI starts with Prefix.
type uriPrefix struct {
	Upstream string `json:"upstream"`
	Prefix   string `json:"prefix"`
}

// applyInvalidation drops what inv names from this replica's cache.
func (s *Server) applyInvalidation(inv invalidation) {
	for _, up := range inv.Pins {
		s.pins.set(up).pull(s.streams)
	}
	if len(inv.Updated) > 0 {
		// Off the caller's goroutine (the fan-out's, which must go on
		// applying invalidations): one Redis round trip per open stream.
		go func() {
			for _, u := range inv.Updated {
				s.notifySubscribers(s.streams, u)
			}
		}()
	}
	s.applyToCache(inv)
}

// applyToCache drops what inv names from this replica's cache only.
func (s *Server) applyToCache(inv invalidation) {
	if s.cache == nil {
		return
	}
	if inv.All {
		s.cache.Purge()
		return
	}
	for _, k := range inv.Keys {
		s.cache.Delete(k)
	}
	if len(inv.Tags) > 0 {
		s.cache.Invalidate(inv.Tags...)
	}
	for _, p := range inv.Prefixes {
		s.cache.InvalidatePrefix(p.Upstream, p.Prefix)
	}
}

// invalidate applies inv here and publishes it to the other replicas. An
// error means it was applied here only: the others were not told yet (the
// fan-out sends it when Redis answers).
func (s *Server) invalidate(ctx context.Context, inv invalidation) error {
	s.applyInvalidation(inv)
	if s.fanout == nil {
		return nil
	}
	b, err := json.Marshal(inv)
	if err != nil {
		return err
	}
	err = s.fanout.Publish(ctx, b)
	// Again after the publish moved the generation: a miss here in
	// between may have copied a second-level entry of before it back
	// into the first level.
	s.applyToCache(inv)
	return err
}

// everything is the invalidation that drops everything: the whole cache,
// and every upstream's pins read again.
func (s *Server) everything() invalidation {
	inv := invalidation{All: true}
	for name := range s.pins.sets {
		inv.Pins = append(inv.Pins, name)
	}
	slices.Sort(inv.Pins)
	return inv
}

// invalidateInBackground is invalidate for the relays: the notification
// that carried the news is not held up by Redis.
func (s *Server) invalidateInBackground(inv invalidation) {
	s.applyInvalidation(inv)
	if s.fanout == nil {
		return
	}
	b, err := json.Marshal(inv)
	if err != nil {
		return
	}
	go func() {
		if err := s.fanout.Publish(s.streams, b); err != nil {
			s.log.Warn("cache invalidation not sent to the other replicas", "error", err.Error())
		}
	}()
}

// applyPublished applies another replica's invalidation.
func (s *Server) applyPublished(payload []byte) {
	// Counted once applied: a test or an operator that sees the count
	// may rely on the cache having dropped the entries.
	defer s.metrics.fanoutReceived.Inc()
	var inv invalidation
	if err := json.Unmarshal(payload, &inv); err != nil {
		// A replica of another version, or not ctxgate: dropping
		// everything is the one safe reading.
		s.log.Warn("invalidation from another replica not understood; dropping the whole cache and reading the pins again", "error", err.Error())
		s.resync()
		return
	}
	s.applyInvalidation(inv)
}

// resync is what a replica does when it may have missed invalidations:
// drop its whole cache and read every pin again.
func (s *Server) resync() {
	if s.cache != nil {
		s.cache.Purge()
	}
	s.pins.pullAll(s.streams)
}

// startFanout follows the other replicas' invalidations and the event
// stream, until the server shuts down.
func (s *Server) startFanout(ctx context.Context) {
	if s.fanout != nil {
		go s.fanout.Run(ctx, s.applyPublished, s.resync)
	}
	if ev := s.cfg.Redis.EventsConfig(); ev != nil && s.cache != nil {
		go s.redis.FollowEvents(ctx, ev.Stream, ev.Group, s.replicaName, s.applyStreamEvent)
	}
}

// newReplicaName names this process among the replicas: its host, its pid
// and a random part (a pid is reused after a restart in a container).
func newReplicaName() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "ctxgate"
	}
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + rand.Text()[:8]
}

// invalidateRequest is what a context source says changed: the body of
// POST /admin/invalidate and the event of the Redis Stream. Upstream
// narrows it to one upstream (else every upstream with a cache); then at
// most one of Method, URI, URIPrefix and Tool narrows it further; All
// alone drops everything.
type invalidateRequest struct {
	All       bool   `json:"all"`
	Upstream  string `json:"upstream"`
	Method    string `json:"method"`
	URI       string `json:"uri"`
	URIPrefix string `json:"uri_prefix"`
	Tool      string `json:"tool"`
}

// maxInvalidateBody bounds a request's or event's body.
const maxInvalidateBody = 64 << 10

// parseInvalidateRequest reads one event strictly: one JSON object, known
// members only, and a combination that names something.
func (s *Server) parseInvalidateRequest(body []byte) (invalidateRequest, invalidation, error) {
	var req invalidateRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, invalidation{}, fmt.Errorf("the body must be one JSON object with members all, upstream, method, uri, uri_prefix or tool: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, invalidation{}, errors.New("the body must be one JSON object, and nothing after it")
	}
	narrowing := 0
	for _, v := range []string{req.Method, req.URI, req.URIPrefix, req.Tool} {
		if v != "" {
			narrowing++
		}
	}
	switch {
	case req.All && (req.Upstream != "" || narrowing > 0):
		return req, invalidation{}, errors.New(`"all" drops everything: give it alone`)
	case req.All:
		return req, invalidation{All: true}, nil
	case req.Upstream == "" && narrowing == 0:
		return req, invalidation{}, errors.New(`name what changed: upstream, and at most one of method, uri, uri_prefix or tool; or {"all": true} for everything`)
	case narrowing > 1:
		return req, invalidation{}, errors.New("give at most one of method, uri, uri_prefix and tool")
	case req.Upstream != "" && s.pool.Get(req.Upstream) == nil:
		return req, invalidation{}, fmt.Errorf("unknown upstream %s", quote(req.Upstream))
	case req.Method != "" && !slices.Contains(config.CacheMethods, req.Method):
		return req, invalidation{}, fmt.Errorf("unknown method %s; cacheable methods are %s", quote(req.Method), strings.Join(config.CacheMethods, ", "))
	}
	ups := []string{req.Upstream}
	if req.Upstream == "" {
		ups = ups[:0]
		for _, up := range s.pool.All() {
			ups = append(ups, up.Name)
		}
	}
	var inv invalidation
	for _, up := range ups {
		switch {
		case req.Method != "":
			inv.Tags = append(inv.Tags, cache.MethodTag(up, req.Method))
		case req.URI != "":
			inv.Tags = append(inv.Tags, cache.ResourceTag(up, req.URI))
			inv.Updated = append(inv.Updated, resourceUpdate{Upstream: up, URI: req.URI})
		case req.URIPrefix != "":
			inv.Prefixes = append(inv.Prefixes, uriPrefix{Upstream: up, Prefix: req.URIPrefix})
			inv.Updated = append(inv.Updated, resourceUpdate{Upstream: up, URI: req.URIPrefix, Prefix: true})
		case req.Tool != "":
			inv.Tags = append(inv.Tags, cache.ToolTag(up, req.Tool))
		default:
			inv.Tags = append(inv.Tags, cache.UpstreamTag(up))
		}
	}
	return req, inv, nil
}

// adminInvalidate serves POST /admin/invalidate: a context source (a git
// webhook relay, a CI job) says what changed, and every replica drops it.
func (s *Server) adminInvalidate(w http.ResponseWriter, r *http.Request) {
	if s.cache == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no response cache: no upstream has a cache block"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxInvalidateBody))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": fmt.Sprintf("the body is over %d bytes", maxInvalidateBody)})
		return
	}
	_, inv, err := s.parseInvalidateRequest(body)
	if err != nil {
		s.metrics.events.WithLabelValues("admin", "poison").Inc()
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if err := s.invalidate(r.Context(), inv); err != nil {
		s.metrics.events.WithLabelValues("admin", "failed").Inc()
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{
			"error":       "invalidated on this replica only; the others were not told: " + err.Error(),
			"replicas":    "this",
			"invalidated": inv,
		})
		return
	}
	s.metrics.events.WithLabelValues("admin", "applied").Inc()
	writeJSON(w, http.StatusOK, map[string]any{"invalidated": inv, "replicas": s.replicasReached()})
}

// replicasReached says who an applied invalidation reached.
func (s *Server) replicasReached() string {
	if s.fanout == nil {
		return "this (no redis: every replica keeps its own cache)"
	}
	return "all"
}

// applyStreamEvent applies one event of the Redis Stream; a malformed one
// is poison (logged and skipped), one that could not be fanned out stays
// pending and is applied again.
func (s *Server) applyStreamEvent(ctx context.Context, event []byte) error {
	if len(event) > maxInvalidateBody {
		s.metrics.events.WithLabelValues("redis_stream", "poison").Inc()
		return fmt.Errorf("%w: over %d bytes", shared.ErrPoison, maxInvalidateBody)
	}
	_, inv, err := s.parseInvalidateRequest(event)
	if err != nil {
		s.metrics.events.WithLabelValues("redis_stream", "poison").Inc()
		return fmt.Errorf("%w: %v", shared.ErrPoison, err)
	}
	if err := s.invalidate(ctx, inv); err != nil {
		s.metrics.events.WithLabelValues("redis_stream", "failed").Inc()
		return err
	}
	s.metrics.events.WithLabelValues("redis_stream", "applied").Inc()
	return nil
}
