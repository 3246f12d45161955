// oidc-provider.mjs: a real OAuth 2.0 / OpenID Connect authorization server
// for the ctxgate e2e tests. It is built on panva's certified `oidc-provider`
// package, pinned in package.json, and is for tests only.
//
// Run:   OIDC_CONFIG='<json>' node oidc-provider.mjs
//
// OIDC_CONFIG (JSON object):
//   {
//     "clients": [                               // required, at least one
//       { "client_id": "tool",                   // required, string
//         "client_secret": "tool-secret",        // required, string
//         "scopes": ["docs.read", "docs.write"]  // optional, the scopes this client may get
//       }, ...
//     ],
//     "resources": {                             // optional (absent = wildcard mode)
//       "http://127.0.0.1:PORT/mcp/docs": {      // an allowed resource indicator (RFC 8707)
//         "scopes": ["docs.read", "docs.write"], // optional; absent = every client scope
//         "alg": "ES256",                        // optional, signing alg for this audience
//         "ttl": 60                              // optional, token lifetime for this audience
//       },
//       "*": { "scopes": [...] }                 // optional wildcard entry, see below
//     },
//     "ttl": 300,                                // optional, access token lifetime in s (default 300)
//     "alg": "RS256",                            // optional, "RS256" (default) or "ES256"
//     "users": { "alice": "alice-pw" }           // optional, test users: username -> password
//   }
//   A client may authenticate with "token_endpoint_auth_method": "private_key_jwt" and
//   "jwks": {"keys": [<public JWK>]} instead of a client_secret (RFC 7523 assertions).
//   A client may also carry "grant_types" (default ["client_credentials"]), from:
//   client_credentials, password, urn:ietf:params:oauth:grant-type:token-exchange,
//   authorization_code, refresh_token; and, with authorization_code, "redirect_uris"
//   (required) and "application_type": "native" (a loopback redirect URI then matches
//   any port, RFC 8252 7.3).
//
// Resource handling, in this order:
//   1. The `resource` parameter matches a key of "resources" exactly, or after
//      URL normalisation (e.g. a trailing "/" on a bare origin). That entry is used.
//   2. Otherwise, if "resources" is absent or has a "*" key, any absolute
//      http(s) URL is accepted (wildcard mode), using the "*" entry's settings
//      if it has one.
//   3. Otherwise the request fails with 400 {"error":"invalid_target",...}.
//   In every case `aud` is the `resource` value exactly as the client sent it.
//   The scopes a token can carry are those the client has AND the resource
//   allows. A requested scope that some configured client or resource knows,
//   but this client does not have, fails with 400 invalid_scope. A requested
//   scope that nothing in the config knows is left out without an error, as
//   oidc-provider does. If no `scope` parameter is sent, the token has no
//   `scope` claim.
//   The `resource` parameter is REQUIRED. Without it the request fails with
//   invalid_target, because oidc-provider would otherwise issue an opaque
//   token with no audience.
//
// stdout: once listening, exactly one line, then nothing else:
//   {"issuer":"http://127.0.0.1:<port>","token_endpoint":"http://127.0.0.1:<port>/token","jwks_uri":"http://127.0.0.1:<port>/jwks"}
// Every log line goes to stderr; console.log/info/debug are sent to stderr too.
//
// Endpoints (all on 127.0.0.1:<port>; the issuer is exactly http://127.0.0.1:<port>):
//   GET  /.well-known/openid-configuration   discovery
//   GET  /jwks                               an RS256 key and an ES256 key (public JWKs)
//   POST /token                              grant_type=client_credentials&resource=<url>[&scope=a b]
//        Client authentication: client_secret_basic OR client_secret_post, both work for every client.
//        The response's access_token is a JWT (RFC 9068):
//          header  {"alg":"RS256"|"ES256","typ":"at+jwt","kid":...}
//          payload {"jti","sub":<client_id>,"iat","exp","scope","client_id","iss","aud":<resource>}
//
//   POST /token  grant_type=password&username=<u>&password=<p>&resource=<url>[&scope=a b]
//        (RFC 6749 4.3, for clients granted "password"): an access token JWT as above
//        with "sub":<username>, for the test users of OIDC_CONFIG.users.
//   POST /token  grant_type=urn:ietf:params:oauth:grant-type:token-exchange (RFC 8693),
//        for clients granted it: subject_token=<an access token JWT this provider issued>,
//        subject_token_type=urn:ietf:params:oauth:token-type:access_token, resource=<url>
//        (required), [audience=<aud>], [scope], [requested_token_type=...:access_token].
//        The subject token's signature, iss, typ at+jwt and exp are checked and it must not
//        be revoked (see /test/revoke); otherwise 400 invalid_grant. The issued token is an
//        access token JWT with the subject's "sub", "aud" = audience if given else resource,
//        and "act": {"sub": <the exchanging client_id>} (nested "act" if the subject token
//        had one). Response adds "issued_token_type".
//
//   GET  /auth?response_type=code&client_id&redirect_uri&state&code_challenge(_method)
//        &resource&scope   the authorization code flow (PKCE verified when sent). The user
//        signs in at /interaction/<uid>: a form (username, password) POSTed to
//        /interaction/<uid>/login, for the test users of OIDC_CONFIG.users. No consent
//        screen: the test clients are first party, what they ask for is granted.
//        Refresh tokens are issued to clients granted refresh_token; a refresh without
//        a resource parameter keeps the granted resource.
//
//   TEST-ONLY routes, not part of any OAuth/OIDC spec:
//   GET  /test/grant-counts  {"<grant_type>": <successful token requests>}
//   POST /test/revoke   token=<jwt>   revokes an access token (by jti): exchanging it fails
//        with invalid_grant. (JWT access tokens are not stored, so the revocation endpoint
//        cannot reach them.) Answers 204.
//   GET  /test/exchanges  {"<sub>": <number of successful token exchanges for that sub>}
//
//   GET  /test/id-token?aud=<url>&sub=<s>[&alg=RS256|ES256][&scope=a b][&ttl=<s>]
//        Returns {"id_token":"<jwt>"}: a JWT shaped like an ID token, signed with the
//        same keys (same kid) and the same issuer, but with header typ "JWT" (not
//        "at+jwt"). Payload {"iss","sub","aud","azp":<sub>,"iat","exp","auth_time"}
//        plus "scope" if given. A resource server that follows RFC 9068 must
//        reject it as an access token.
//
// Keys are generated in memory at start-up (node:crypto) and never written to disk.
// SIGTERM/SIGINT close the server and exit with status 0.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

// Keep stdout for the one JSON line. oidc-provider writes its NOTICE messages
// with console.info, which would otherwise reach stdout.
for (const m of ['log', 'info', 'debug']) {
  // eslint-disable-next-line no-console
  console[m] = (...args) => console.error(...args);
}

function fail(msg) {
  process.stderr.write(`oidc-provider.mjs: ${msg}\n`);
  process.exit(1);
}

// ---- configuration -------------------------------------------------------

let cfg;
try {
  cfg = JSON.parse(process.env.OIDC_CONFIG ?? '');
} catch (err) {
  fail(`OIDC_CONFIG must hold a JSON object: ${err.message}`);
}
if (cfg === null || typeof cfg !== 'object' || Array.isArray(cfg)) fail('OIDC_CONFIG must be a JSON object');
if (!Array.isArray(cfg.clients) || cfg.clients.length === 0) fail('OIDC_CONFIG.clients must be a non-empty array');

const SUPPORTED_ALGS = new Set(['RS256', 'ES256']);
const defaultAlg = cfg.alg ?? 'RS256';
if (!SUPPORTED_ALGS.has(defaultAlg)) fail(`OIDC_CONFIG.alg must be RS256 or ES256, got ${JSON.stringify(cfg.alg)}`);
const defaultTTL = cfg.ttl ?? 300;
if (!Number.isSafeInteger(defaultTTL) || defaultTTL <= 0) fail('OIDC_CONFIG.ttl must be a positive integer (seconds)');

const isScopeList = (v) => Array.isArray(v) && v.every((s) => typeof s === 'string' && /^[\x21\x23-\x5B\x5D-\x7E]+$/.test(s));

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const GRANT_TYPES = new Set(['client_credentials', 'password', TOKEN_EXCHANGE, 'authorization_code', 'refresh_token']);

const users = new Map(Object.entries(cfg.users ?? {}));
for (const [u, pw] of users) if (typeof pw !== 'string' || !pw) fail(`users.${u} must be a non-empty password string`);

const clientScopes = new Map(); // client_id -> Set of scopes
const clients = cfg.clients.map((c, i) => {
  if (!c || typeof c.client_id !== 'string' || !c.client_id) fail(`clients[${i}].client_id must be a non-empty string`);
  const keyAuth = c.token_endpoint_auth_method === 'private_key_jwt';
  if (keyAuth && !(c.jwks && Array.isArray(c.jwks.keys))) fail(`clients[${i}].jwks must hold the client's public keys with private_key_jwt`);
  if (!keyAuth && (typeof c.client_secret !== 'string' || !c.client_secret)) fail(`clients[${i}].client_secret must be a non-empty string`);
  if (c.scopes !== undefined && !isScopeList(c.scopes)) fail(`clients[${i}].scopes must be an array of scope tokens`);
  if (clientScopes.has(c.client_id)) fail(`duplicate client_id ${c.client_id}`);
  clientScopes.set(c.client_id, new Set(c.scopes ?? []));
  if (c.grant_types !== undefined && !(Array.isArray(c.grant_types) && c.grant_types.every((g) => GRANT_TYPES.has(g)))) {
    fail(`clients[${i}].grant_types must be an array of: ${[...GRANT_TYPES].join(', ')}`);
  }
  const code = (c.grant_types ?? []).includes('authorization_code');
  if (code && !(Array.isArray(c.redirect_uris) && c.redirect_uris.length)) fail(`clients[${i}].redirect_uris is required with authorization_code`);
  return {
    client_id: c.client_id,
    ...(keyAuth ? { jwks: c.jwks } : { client_secret: c.client_secret }),
    grant_types: c.grant_types ?? ['client_credentials'],
    response_types: code ? ['code'] : [],
    redirect_uris: code ? c.redirect_uris : [],
    ...(c.application_type ? { application_type: c.application_type } : undefined),
    // Only the registered value; oidc-provider accepts client_secret_basic and
    // client_secret_post interchangeably for a client registered with either.
    token_endpoint_auth_method: keyAuth ? 'private_key_jwt' : 'client_secret_basic',
    ...(c.scopes?.length ? { scope: c.scopes.join(' ') } : undefined), // oidc-provider refuses an empty scope
  };
});

const resources = new Map(); // normalised URL (or "*") -> { scopes?: Set, alg, ttl }
let wildcard = cfg.resources === undefined;
if (cfg.resources !== undefined) {
  if (cfg.resources === null || typeof cfg.resources !== 'object' || Array.isArray(cfg.resources)) {
    fail('OIDC_CONFIG.resources must be an object keyed by resource URL');
  }
  for (const [key, r] of Object.entries(cfg.resources)) {
    const entry = r ?? {};
    if (typeof entry !== 'object' || Array.isArray(entry)) fail(`resources[${key}] must be an object`);
    if (entry.scopes !== undefined && !isScopeList(entry.scopes)) fail(`resources[${key}].scopes must be an array of scope tokens`);
    if (entry.alg !== undefined && !SUPPORTED_ALGS.has(entry.alg)) fail(`resources[${key}].alg must be RS256 or ES256`);
    if (entry.ttl !== undefined && (!Number.isSafeInteger(entry.ttl) || entry.ttl <= 0)) fail(`resources[${key}].ttl must be a positive integer`);
    const value = {
      scopes: entry.scopes ? new Set(entry.scopes) : undefined,
      alg: entry.alg ?? defaultAlg,
      ttl: entry.ttl ?? defaultTTL,
    };
    if (key === '*') {
      wildcard = true;
      resources.set('*', value);
      continue;
    }
    const u = URL.parse(key);
    if (!u || !/^https?:$/.test(u.protocol)) fail(`resources key ${JSON.stringify(key)} must be an absolute http(s) URL or "*"`);
    resources.set(key, value);
    resources.set(u.href, value);
  }
}

// Every scope the configuration mentions. oidc-provider rejects (invalid_scope)
// a requested scope from this set that the client is not allowed to have.
const knownScopes = new Set(['openid']);
for (const s of clientScopes.values()) for (const x of s) knownScopes.add(x);
for (const r of resources.values()) for (const x of r.scopes ?? []) knownScopes.add(x);

// ---- keys ----------------------------------------------------------------

function makeKey(alg) {
  const { privateKey } = alg === 'RS256'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' });
  const kid = `${alg.toLowerCase()}-${crypto.randomBytes(8).toString('hex')}`;
  return { alg, kid, privateKey, jwk: { ...jwk, kid, alg, use: 'sig' } };
}
const keys = { RS256: makeKey('RS256'), ES256: makeKey('ES256') };

// ---- server --------------------------------------------------------------

const { default: Provider, errors } = await import('oidc-provider');

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

// Sign a compact JWS with node:crypto. ES256 needs the raw r||s (IEEE P1363) form.
function signJWT(header, payload, key) {
  const input = `${b64url(header)}.${b64url(payload)}`;
  const sig = crypto.sign('sha256', Buffer.from(input), {
    key: key.privateKey,
    dsaEncoding: key.alg === 'ES256' ? 'ieee-p1363' : undefined,
  });
  return `${input}.${sig.toString('base64url')}`;
}

let providerHandler; // provider.callback(), set once the provider exists
const testRoutes = new Map(); // TEST-ONLY routes other than /test/id-token, by path
let issuer;

function sendJSON(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
  res.end(data);
}

// TEST-ONLY: an ID-token-shaped JWT (typ "JWT"), see the header comment.
function testIdToken(req, res, url) {
  if (req.method !== 'GET') return sendJSON(res, 405, { error: 'invalid_request', error_description: 'GET only' });
  const aud = url.searchParams.get('aud');
  const sub = url.searchParams.get('sub');
  const alg = url.searchParams.get('alg') ?? defaultAlg;
  const scope = url.searchParams.get('scope');
  const ttl = Number(url.searchParams.get('ttl') ?? defaultTTL);
  if (!aud || !sub) return sendJSON(res, 400, { error: 'invalid_request', error_description: 'aud and sub are required' });
  if (!SUPPORTED_ALGS.has(alg)) return sendJSON(res, 400, { error: 'invalid_request', error_description: 'alg must be RS256 or ES256' });
  if (!Number.isSafeInteger(ttl)) return sendJSON(res, 400, { error: 'invalid_request', error_description: 'ttl must be an integer' });
  const now = Math.floor(Date.now() / 1000);
  const key = keys[alg];
  const payload = {
    iss: issuer, sub, aud, azp: sub, iat: now, exp: now + ttl, auth_time: now,
    ...(scope ? { scope } : undefined),
  };
  const token = signJWT({ alg, typ: 'JWT', kid: key.kid }, payload, key);
  return sendJSON(res, 200, { id_token: token });
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname === '/test/id-token') return testIdToken(req, res, url);
  if (testRoutes.has(url.pathname)) return testRoutes.get(url.pathname)(req, res, url);
  if (url.pathname.startsWith('/interaction/')) return interaction(req, res, url);
  return providerHandler(req, res);
});

await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', resolve);
});
issuer = `http://127.0.0.1:${server.address().port}`;

function lookupResource(identifier) {
  const exact = resources.get(identifier);
  if (exact) return exact;
  const u = URL.parse(identifier);
  if (u && resources.has(u.href)) return resources.get(u.href);
  if (wildcard && u && /^https?:$/.test(u.protocol)) {
    return resources.get('*') ?? { scopes: undefined, alg: defaultAlg, ttl: defaultTTL };
  }
  return undefined;
}

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [keys[defaultAlg].jwk, keys[defaultAlg === 'RS256' ? 'ES256' : 'RS256'].jwk] },
  clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'private_key_jwt'],
  responseTypes: ['code', 'none'],
  scopes: [...knownScopes, 'offline_access'],
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  enabledJWA: { idTokenSigningAlgValues: ['RS256', 'ES256'] },
  clientDefaults: {
    grant_types: ['client_credentials'],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: defaultAlg,
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: false },
    revocation: { enabled: false },
    resourceIndicators: {
      enabled: true,
      // No resource parameter: refuse rather than issue an opaque, audience-less token.
      defaultResource: async () => {
        throw new errors.InvalidTarget('the resource parameter is required');
      },
      getResourceServerInfo: (ctx, identifier, client) => resourceServerInfo(ctx, identifier, client),
      // A refresh (x/oauth2 sends no resource) keeps the granted resource.
      useGrantedResource: async () => true,
    },
  },
  ttl: {
    ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? defaultTTL,
    AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL ?? defaultTTL,
  },
  // The act claim of exchanged tokens (set by issue() above).
  extraTokenClaims: async (ctx, token) => token.testExtra,
  // Test users have no claims beyond their sub.
  findAccount: async (ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  renderError: async (ctx, out) => {
    ctx.type = 'json';
    ctx.body = out;
  },
});

// resourceServerInfo is the features.resourceIndicators.getResourceServerInfo
// answer; the password and token-exchange grants resolve resources with it too.
async function resourceServerInfo(ctx, identifier, client) {
  const r = lookupResource(identifier);
  if (!r) throw new errors.InvalidTarget(`resource ${identifier} is not allowed`);
  const mine = clientScopes.get(client.clientId) ?? new Set();
  const scope = [...mine].filter((s) => !r.scopes || r.scopes.has(s)).join(' ');
  return {
    scope, // what this client may get for this audience
    audience: identifier,
    accessTokenTTL: r.ttl,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: r.alg } },
  };
}

// ---- test users (password grant) and token exchange (RFC 8693) ----------

const revoked = new Set(); // jti of revoked access tokens
const exchanges = new Map(); // sub -> successful exchanges

// resourceServerFor resolves a resource indicator as the built-in grants do.
async function resourceServerFor(ctx, identifier) {
  if (typeof identifier !== 'string' || !identifier) throw new errors.InvalidTarget('the resource parameter is required');
  const info = await resourceServerInfo(ctx, identifier, ctx.oidc.client);
  return new provider.ResourceServer(identifier, info);
}

// grantedScope is what a client asks for, limited to what it and the resource allow.
function grantedScope(ctx, resourceServer) {
  const asked = (ctx.oidc.params.scope ?? '').split(' ').filter(Boolean);
  const mine = clientScopes.get(ctx.oidc.client.clientId) ?? new Set();
  for (const s of asked) if (knownScopes.has(s) && !mine.has(s)) throw new errors.InvalidScope(`scope ${s} is not allowed for this client`);
  const allowed = new Set(resourceServer.scope.split(' '));
  return asked.filter((s) => mine.has(s) && allowed.has(s)).join(' ') || undefined;
}

async function issue(ctx, { sub, resourceServer, scope, audience, extra }) {
  const token = new provider.AccessToken({ accountId: sub, client: ctx.oidc.client, scope, gty: ctx.oidc.params.grant_type });
  token.resourceServer = resourceServer;
  if (audience) token.setAudience(audience);
  token.testExtra = extra; // read by extraTokenClaims below
  const value = await token.save();
  return { token, value };
}

provider.registerGrantType('password', async (ctx) => {
  const { username, password } = ctx.oidc.params;
  if (!username || users.get(username) !== password) throw new errors.InvalidGrant('wrong username or password');
  const resourceServer = await resourceServerFor(ctx, ctx.oidc.params.resource);
  const { token, value } = await issue(ctx, { sub: username, resourceServer, scope: grantedScope(ctx, resourceServer) });
  ctx.body = { access_token: value, token_type: 'Bearer', expires_in: token.expiration, scope: token.scope };
}, ['username', 'password', 'scope', 'resource']);

// verifySubjectToken checks an access token JWT this provider issued.
function verifySubjectToken(jwt) {
  const parts = typeof jwt === 'string' ? jwt.split('.') : [];
  if (parts.length !== 3) throw new errors.InvalidGrant('subject_token is not a JWT');
  let header;
  let payload;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url'));
    payload = JSON.parse(Buffer.from(parts[1], 'base64url'));
  } catch {
    throw new errors.InvalidGrant('subject_token is not a JWT');
  }
  const key = Object.values(keys).find((k) => k.kid === header.kid && k.alg === header.alg);
  const ok = key && crypto.verify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`), {
    key: crypto.createPublicKey(key.privateKey),
    dsaEncoding: key.alg === 'ES256' ? 'ieee-p1363' : undefined,
  }, Buffer.from(parts[2], 'base64url'));
  if (!ok) throw new errors.InvalidGrant('subject_token signature is invalid');
  if (header.typ !== 'at+jwt' || payload.iss !== issuer) throw new errors.InvalidGrant('subject_token is not an access token of this issuer');
  if (!(payload.exp > Math.floor(Date.now() / 1000))) throw new errors.InvalidGrant('subject_token is expired');
  if (revoked.has(payload.jti)) throw new errors.InvalidGrant('subject_token is revoked');
  return payload;
}

provider.registerGrantType(TOKEN_EXCHANGE, async (ctx) => {
  const p = ctx.oidc.params;
  if (p.subject_token_type !== ACCESS_TOKEN_TYPE) throw new errors.InvalidRequest(`subject_token_type must be ${ACCESS_TOKEN_TYPE}`);
  if (p.requested_token_type !== undefined && p.requested_token_type !== ACCESS_TOKEN_TYPE) {
    throw new errors.InvalidRequest(`requested_token_type must be ${ACCESS_TOKEN_TYPE}`);
  }
  const subject = verifySubjectToken(p.subject_token);
  const resourceServer = await resourceServerFor(ctx, p.resource);
  const act = { sub: ctx.oidc.client.clientId, ...(subject.act ? { act: subject.act } : undefined) };
  const { token, value } = await issue(ctx, {
    sub: subject.sub, resourceServer, scope: grantedScope(ctx, resourceServer), audience: p.audience, extra: { act },
  });
  exchanges.set(subject.sub, (exchanges.get(subject.sub) ?? 0) + 1);
  ctx.body = {
    access_token: value, issued_token_type: ACCESS_TOKEN_TYPE, token_type: 'Bearer', expires_in: token.expiration, scope: token.scope,
  };
}, ['subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'resource', 'scope']);

// TEST-ONLY, see the header comment.
async function testRevoke(req, res) {
  if (req.method !== 'POST') return sendJSON(res, 405, { error: 'invalid_request', error_description: 'POST only' });
  let body = '';
  for await (const chunk of req) body += chunk;
  const token = new URLSearchParams(body).get('token') ?? '';
  try {
    const { jti } = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url'));
    if (!jti) throw new Error('no jti');
    revoked.add(jti);
  } catch {
    return sendJSON(res, 400, { error: 'invalid_request', error_description: 'token must be an access token JWT' });
  }
  res.writeHead(204);
  return res.end();
}
testRoutes.set('/test/revoke', testRevoke);

const grantCounts = {};
provider.on('grant.success', (ctx) => {
  const g = ctx.oidc.params.grant_type;
  grantCounts[g] = (grantCounts[g] ?? 0) + 1;
});
testRoutes.set('/test/grant-counts', (req, res) => sendJSON(res, 200, grantCounts));

// ---- sign-in (the authorization code flow's interaction) ------------------

const escapeHTML = (v) => String(v).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function interaction(req, res, url) {
  const m = /^\/interaction\/([^/]+)(\/login)?$/.exec(url.pathname);
  if (!m) return providerHandler(req, res);
  try {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== m[1]) throw new Error('interaction mismatch');
    if (details.prompt.name === 'consent') {
      // First-party test clients: approve what is asked (oidc-provider's
      // own consent example), without a screen.
      const { prompt: { details: missing }, params, session: { accountId } } = details;
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId, clientId: params.client_id });
      if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
      if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) grant.addResourceScope(indicator, scopes.join(' '));
      const grantId = await grant.save();
      return await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    }
    if (!m[2]) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      return res.end(`<!doctype html><title>Sign in</title><form method="post" action="/interaction/${escapeHTML(m[1])}/login">`
        + '<input name="username"><input name="password" type="password"><button>Sign in</button></form>');
    }
    if (req.method !== 'POST') return sendJSON(res, 405, { error: 'invalid_request', error_description: 'POST only' });
    let body = '';
    for await (const chunk of req) body += chunk;
    const form = new URLSearchParams(body);
    const user = form.get('username');
    if (!user || users.get(user) !== form.get('password')) {
      res.writeHead(401, { 'content-type': 'text/plain' });
      return res.end('wrong username or password');
    }
    return await provider.interactionFinished(req, res, { login: { accountId: user } }, { mergeWithLastSubmission: false });
  } catch (err) {
    return sendJSON(res, 400, { error: 'invalid_request', error_description: `interaction: ${err.message}` });
  }
}
testRoutes.set('/test/exchanges', (req, res) => sendJSON(res, 200, Object.fromEntries(exchanges)));

providerHandler = provider.callback();

provider.on('server_error', (ctx, err) => process.stderr.write(`oidc-provider server_error: ${err.stack}\n`));
provider.on('grant.error', (ctx, err) => process.stderr.write(`oidc-provider grant.error: ${err.message}${err.error_description ? ` (${err.error_description})` : ''}\n`));

process.stdout.write(`${JSON.stringify({
  issuer,
  token_endpoint: `${issuer}/token`,
  jwks_uri: `${issuer}/jwks`,
})}\n`);

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  process.stderr.write(`oidc-provider.mjs: ${signal}, shutting down\n`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
