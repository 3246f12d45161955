package gateway

import (
	"io"
	"net/http"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/mcpwire"
)

// The gateway's short names for the wire codec (package mcpwire), used
// across the package: the decoders, the version tables and the _meta
// keys. They are the codec's own functions and values, renamed only.

const (
	eraLegacy = mcpwire.EraLegacy
	eraModern = mcpwire.EraModern

	metaProtocolVersion    = mcpwire.MetaProtocolVersion
	metaClientCapabilities = mcpwire.MetaClientCapabilities
	metaIdempotencyKey     = mcpwire.MetaIdempotencyKey
)

var (
	supportedVersions = mcpwire.SupportedVersions
	modernVersions    = mcpwire.ModernVersions
	errBatch          = mcpwire.ErrBatch
)

type sseEvent = mcpwire.Event

func decodeMessage(data []byte) (*mcpwire.Message, error) { return mcpwire.Decode(data) }

func decodeRPC(data []byte) (jsonrpc.Message, error) { return mcpwire.DecodeRPC(data) }

func checkStrict(data []byte) error { return mcpwire.CheckStrict(data) }

func foldName(name string) string { return mcpwire.FoldName(name) }

func isSupportedVersion(v string) bool { return mcpwire.IsSupportedVersion(v) }

func newSSEReader(r io.Reader) *mcpwire.Reader { return mcpwire.NewReader(r) }

func quote(s string) string { return mcpwire.Quote(s) }

func checkName(name string) error { return mcpwire.CheckName(name) }

func checkURI(uri string) error { return mcpwire.CheckURI(uri) }

func setMirroredName(h http.Header, name string) { mcpwire.SetMirroredName(h, name) }
