// Package mcpwire is the gateway's MCP wire codec: what a message is on
// the wire, decided once and strictly, before anything reads it.
//
//   - Decode and DecodeWith: one client message, checked for duplicate and
//     case-variant member names, depth, a decode budget (Limits), the
//     JSON-RPC envelope and its id, then typed with the SDK's jsonrpc
//     types; Raw keeps exactly the bytes checked, which are what is
//     forwarded. PeekID reads the id of a message that failed, for the
//     error answer.
//   - DecodeRPC: upstream messages, as strictly, without the SDK decoder's
//     per-call buffers.
//   - Message.CheckParams and ReadParams: a request's params against the
//     table of every member the gateway reads (params.go), keeping those
//     members (Params: name, URI, cursor, arguments, _meta and the modern
//     era's _meta members) so no reader decodes params again. TargetOf is
//     the one table of which member names a tool, prompt or resource.
//   - Reader and Event: text/event-stream, parsed and re-encoded field for
//     field; EncodeHeaderValue and DecodeHeaderValue: SEP-2243's mirrored
//     header values.
//   - The protocol tables: legacy and modern revisions, eras, the _meta
//     keys, the client methods and those the modern era removed.
//
// Errors are sentinels (ErrMalformed, ErrOverBudget, ErrBatch,
// ErrInvalidParams, ErrEventTooLarge): the gateway's one error writer
// turns them into HTTP statuses and JSON-RPC codes. The package imports
// nothing of ctxgate.
package mcpwire
