package gateway

import (
	"net/http"
	"slices"
	"strings"

	"github.com/ctxgate/ctxgate/cache"
	"github.com/ctxgate/ctxgate/config"
)

// cacheAdmin serves /admin/cache on the admin listener:
//
//	GET                         the cache's counters (cache.Stats)
//	POST or DELETE              purge, by the query parameters:
//	  ?key=K                      one entry (keys are in the access log, cache_key)
//	  ?upstream=U&method=M        one method's entries of one upstream
//	  ?upstream=U                 everything of one upstream
//	  ?method=M                   one method's entries of every upstream
//	  (none)                      everything
//
// Without a cache (no upstream has a cache block) it answers 404.
func (s *Server) cacheAdmin() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cache == nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no response cache: no upstream has a cache block"})
			return
		}
		switch r.Method {
		case http.MethodGet:
			writeJSON(w, http.StatusOK, s.cache.Stats())
		case http.MethodPost, http.MethodDelete:
			purged, inv, problem := s.purgeCache(r)
			if problem != "" {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": problem})
				return
			}
			if err := s.invalidate(r.Context(), inv); err != nil {
				writeJSON(w, http.StatusServiceUnavailable, map[string]any{
					"error":    "purged on this replica only; the others were not told: " + err.Error(),
					"purged":   purged,
					"replicas": "this",
				})
				return
			}
			writeJSON(w, http.StatusOK, map[string]any{"purged": purged, "replicas": s.replicasReached(), "stats": s.cache.Stats()})
		default:
			w.Header().Set("Allow", "GET, POST, DELETE")
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "use GET for stats, POST or DELETE to purge"})
		}
	}
}

// purgeCache says what the query names to purge, as an invalidation and
// in words, or what is wrong with the query.
func (s *Server) purgeCache(r *http.Request) (string, invalidation, string) {
	q := r.URL.Query()
	key, upstreamName, method := q.Get("key"), q.Get("upstream"), q.Get("method")
	if upstreamName != "" && s.pool.Get(upstreamName) == nil {
		return "", invalidation{}, "unknown upstream " + quote(upstreamName)
	}
	if method != "" && !slices.Contains(config.CacheMethods, method) {
		return "", invalidation{}, "unknown method " + quote(method) + "; cacheable methods are " + strings.Join(config.CacheMethods, ", ")
	}
	switch {
	case key != "":
		return "key " + key, invalidation{Keys: []string{key}}, ""
	case upstreamName != "" && method != "":
		return method + " of " + upstreamName, invalidation{Tags: []string{cache.MethodTag(upstreamName, method)}}, ""
	case upstreamName != "":
		return "everything of " + upstreamName, invalidation{Tags: []string{cache.UpstreamTag(upstreamName)}}, ""
	case method != "":
		var tags []string
		for _, up := range s.pool.All() {
			tags = append(tags, cache.MethodTag(up.Name, method))
		}
		return method + " of every upstream", invalidation{Tags: tags}, ""
	}
	return "everything", invalidation{All: true}, ""
}
