package gateway

import (
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// CodeRequestTimeout answers a request whose body did not arrive within
// server.read_body_timeout.
const CodeRequestTimeout = -31006 // 408

// bodyDeadline bounds how long a client may take to send a request body
// (slow-body attacks hold a goroutine and a connection per request; net/http
// bounds only the headers, with ReadHeaderTimeout). The deadline is set on
// the connection when the handler starts and lifted once the body has been
// read, so a long response (an event stream) is never cut by it: net/http
// keeps reading the connection in the background to notice a client that
// goes away, and an expired deadline there would cancel the request.
func bodyDeadline(w http.ResponseWriter, r *http.Request, timeout time.Duration) {
	if r.Body == nil || r.Body == http.NoBody || timeout <= 0 {
		return
	}
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(timeout)) != nil {
		return // a writer without a connection (a test recorder)
	}
	r.Body = &deadlineBody{ReadCloser: r.Body, lift: func() { _ = rc.SetReadDeadline(time.Time{}) }}
}

// deadlineBody lifts the read deadline when the body ends, or fails.
type deadlineBody struct {
	io.ReadCloser
	lift func()
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		b.lift()
	}
	return n, err
}

// bodyReadError is the answer to a body that could not be read.
func bodyReadError(err error) error {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return newError(http.StatusRequestEntityTooLarge, CodePayloadTooLarge, "request body too large", err)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return newError(http.StatusRequestTimeout, CodeRequestTimeout, "request body not received in time", err)
	}
	return badRequest("could not read request body", err)
}
