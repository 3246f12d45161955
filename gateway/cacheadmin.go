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
			purged, problem := s.purgeCache(r)
			if problem != "" {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": problem})
				return
			}
			writeJSON(w, http.StatusOK, map[string]any{"purged": purged, "stats": s.cache.Stats()})
		default:
			w.Header().Set("Allow", "GET, POST, DELETE")
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "use GET for stats, POST or DELETE to purge"})
		}
	}
}

// purgeCache purges what the query names and describes it, or returns
// what is wrong with the query.
func (s *Server) purgeCache(r *http.Request) (string, string) {
	q := r.URL.Query()
	key, upstreamName, method := q.Get("key"), q.Get("upstream"), q.Get("method")
	if upstreamName != "" && s.pool.Get(upstreamName) == nil {
		return "", "unknown upstream " + quote(upstreamName)
	}
	if method != "" && !slices.Contains(config.CacheMethods, method) {
		return "", "unknown method " + quote(method) + "; cacheable methods are " + strings.Join(config.CacheMethods, ", ")
	}
	switch {
	case key != "":
		s.cache.Delete(key)
		return "key " + key, ""
	case upstreamName != "" && method != "":
		s.cache.Invalidate(cache.MethodTag(upstreamName, method))
		return method + " of " + upstreamName, ""
	case upstreamName != "":
		s.cache.Invalidate(cache.UpstreamTag(upstreamName))
		return "everything of " + upstreamName, ""
	case method != "":
		var tags []string
		for _, up := range s.pool.All() {
			tags = append(tags, cache.MethodTag(up.Name, method))
		}
		s.cache.Invalidate(tags...)
		return method + " of every upstream", ""
	}
	s.cache.Purge()
	return "everything", ""
}
