package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/shared"
)

// sharedIdempotency is a route's idempotency ledger on Redis, shared by
// every replica on the same Redis and key prefix: a key is reserved with
// SET NX PX (with a lease its owner renews while the call runs), replaced
// by the answer when the call ends, and kept window long. A duplicate on
// any replica replays the answer, or waits for it (polling, at most the
// route's deadline), or is told the call is still in progress; it never
// runs the call a second time. With Redis unreachable a call with a key
// is refused: no replica alone can keep the promise, whatever
// redis.on_error says (that is about rate limits).
type sharedIdempotency struct {
	route  string
	redis  *shared.Client
	window time.Duration
	// wait bounds a duplicate's wait for the first call: the route's
	// deadline, the longest the call itself could have been given.
	wait time.Duration
}

// newSharedIdempotency is nil without Redis: the ledger stays in memory.
func newSharedIdempotency(c config.Upstream, redis *shared.Client) *sharedIdempotency {
	if redis == nil {
		return nil
	}
	return &sharedIdempotency{route: c.Name, redis: redis, window: c.Idempotency.Window, wait: c.Deadline}
}

// The waits between a duplicate's looks at a running call: short first
// (most calls are short), then at most maxPoll, so a thousand waiting
// duplicates cost Redis a few thousand round trips a second at worst.
const (
	firstPoll = 5 * time.Millisecond
	maxPoll   = 200 * time.Millisecond
)

// ledgerUnavailable is the answer when Redis cannot answer for the
// ledger: nothing is sent, since nothing could stop a second execution.
func ledgerUnavailable(err error) *Error {
	e := newError(http.StatusServiceUnavailable, CodeIdempotencyUnavailable, "idempotency ledger unavailable: the at-most-once promise cannot be kept; nothing was sent, retry later", err)
	setRetryAfter(e, time.Second)
	return e
}

// inProgress is a duplicate's answer when the first call still runs after
// the duplicate waited as long as it may.
func inProgress() *Error {
	e := newError(http.StatusConflict, CodeIdempotencyInProgress, "a call with this idempotency key is still in progress; retry later to get its answer", nil)
	setRetryAfter(e, time.Second)
	return e
}

// errOwnerGone is a duplicate's answer when the replica running the first
// call stopped renewing its lease (crashed, killed, cut off from Redis)
// before recording an answer: it may or may not have run.
var errOwnerGone = outcomeUnknown(http.StatusBadGateway, errors.New("the replica running the first call with this key went away before recording its answer"))

// forwardOnceShared is forwardOnce on the shared ledger.
func (s *Server) forwardOnceShared(w http.ResponseWriter, r *http.Request, rt *route, principal, key string, st *requestState) {
	l := rt.res.sharedIdem
	digest := callDigest(st.msg.Request())
	cl, err := l.redis.ClaimIdempotency(r.Context(), shared.OpIdempotencyClaim, l.route, principal, key, digest, l.window)
	if err != nil {
		writeError(w, r, ledgerUnavailable(err))
		return
	}
	if cl.Lease == nil {
		var a *idemAnswer
		if cl, a, err = s.awaitShared(r, l, principal, key, digest, cl); err != nil {
			writeError(w, r, err)
			return
		}
		if a != nil {
			s.replay(w, r, a, st)
			return
		}
		// The key was released (the first call never ran): this one runs.
	}
	s.runOwned(w, r, rt, cl.Lease, st)
}

// awaitShared waits for the call holding the key to end, looking again
// after a growing pause, at most l.wait and while the client waits. It
// returns the answer to replay, or the claim this call now holds (the key
// was released), or the error to answer with.
func (s *Server) awaitShared(r *http.Request, l *sharedIdempotency, principal, key string, digest [32]byte, cl shared.Claim) (shared.Claim, *idemAnswer, error) {
	// Waiting is not work: the slot goes back meanwhile, so duplicates
	// cannot fill the admission limit while the first call runs.
	t := ticketOf(r.Context())
	t.release()
	defer t.resume()
	ctx, cancel := context.WithTimeout(r.Context(), l.wait)
	defer cancel()
	pause := firstPoll
	for {
		switch {
		case cl.Digest != digest:
			return cl, nil, errIdempotencyMismatch
		case cl.Lease != nil:
			return cl, nil, nil
		case cl.Answer != nil:
			a, err := decodeAnswer(cl.Answer)
			if err != nil {
				return cl, nil, newError(http.StatusInternalServerError, CodeInternalError, "internal gateway error", err)
			}
			return cl, a, nil
		case !cl.OwnerAlive:
			return cl, nil, errOwnerGone
		}
		timer := time.NewTimer(pause)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return cl, nil, waitEnded(r)
		}
		pause = min(2*pause, maxPoll)
		var err error
		cl, err = l.redis.ClaimIdempotency(ctx, shared.OpIdempotencyWait, l.route, principal, key, digest, l.window)
		if err != nil {
			if ctx.Err() != nil {
				return cl, nil, waitEnded(r)
			}
			return cl, nil, ledgerUnavailable(err)
		}
	}
}

// waitEnded is the answer when a duplicate's wait ends without an answer:
// nobody to tell if the client left, else "in progress".
func waitEnded(r *http.Request) error {
	if r.Context().Err() != nil {
		return fmt.Errorf("client went away: %w", context.Canceled)
	}
	return inProgress()
}

// runOwned runs the call whose key this replica reserved, renewing the
// lease meanwhile, and records its answer (or releases the key when the
// call provably never ran). What the client is sent does not wait for
// Redis: if the answer cannot be recorded, the reservation stays until it
// expires and duplicates learn that the outcome is unknown.
func (s *Server) runOwned(w http.ResponseWriter, r *http.Request, rt *route, lease *shared.Lease, st *requestState) {
	stop := keepAlive(lease)
	a, ran := idemAnswer{}, true
	defer func() {
		// Deferred, so the answer (or its absence) is recorded even if the
		// proxy panics.
		stop()
		// The client going away must not stop the record of what it got.
		ctx := context.WithoutCancel(r.Context())
		var err error
		if ran {
			err = lease.Finish(ctx, encodeAnswer(a.orUnrecorded()))
		} else {
			err = lease.Release(ctx)
		}
		if err != nil {
			s.log.Warn("idempotency ledger: the first call's end was not recorded; duplicates will be told its outcome is unknown",
				"upstream", rt.upstream.Name, "ran", ran, "error", err.Error())
		}
	}()
	a, ran = s.runFirst(w, r, rt, st)
}

// keepAlive renews the lease every third of shared.IdempotencyLease until
// stop is called. A failed renewal is not fatal: the next may succeed,
// and if none does the duplicates see the owner gone, never a second run.
func keepAlive(lease *shared.Lease) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(shared.IdempotencyLease / 3)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if errors.Is(lease.Renew(ctx), shared.ErrLeaseLost) {
					return
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

// storedAnswer is an idemAnswer as the ledger keeps it. A gateway error
// keeps what its client saw (status, code, message, data, headers such as
// Retry-After); its internal cause stays in the first call's log record.
type storedAnswer struct {
	Status      int          `json:"status,omitempty"`
	ContentType string       `json:"content_type,omitempty"`
	Body        []byte       `json:"body,omitempty"`
	Error       *storedError `json:"error,omitempty"`
}

type storedError struct {
	Status  int             `json:"status"`
	Code    int64           `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
	Header  http.Header     `json:"header,omitempty"`
}

func encodeAnswer(a idemAnswer) []byte {
	sa := storedAnswer{Status: a.status, ContentType: a.contentType, Body: a.body}
	if e := a.gwErr; e != nil {
		sa = storedAnswer{Error: &storedError{Status: e.Status, Code: e.Code, Message: e.Message, Data: e.Data, Header: e.Header}}
	}
	b, _ := json.Marshal(sa) // plain data: cannot fail
	return b
}

func decodeAnswer(b []byte) (*idemAnswer, error) {
	var sa storedAnswer
	if err := json.Unmarshal(b, &sa); err != nil {
		return nil, fmt.Errorf("idempotency ledger: decode answer: %w", err)
	}
	if e := sa.Error; e != nil {
		gwErr := newError(e.Status, e.Code, e.Message, errors.New("replayed from the idempotency ledger"))
		gwErr.Data, gwErr.Header = e.Data, e.Header
		return &idemAnswer{gwErr: gwErr}, nil
	}
	return &idemAnswer{status: sa.Status, contentType: sa.ContentType, body: sa.Body}, nil
}
