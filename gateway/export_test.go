package gateway

import "context"

// StartShared starts what Serve starts for the state shared on Redis (the
// invalidation fan-out, the event stream), for tests and benchmarks that
// drive the handler without listeners.
func (s *Server) StartShared(ctx context.Context) { s.startFanout(ctx) }

// InStep reports whether the fan-out follows Redis (true without one).
func (s *Server) InStep() bool { return s.fanout == nil || s.fanout.Synced() }
