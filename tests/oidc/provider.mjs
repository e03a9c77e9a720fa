// A real OpenID provider for tokenguard's interop tests (node oidc-provider 8.x).
//
// Environment: PORT (loopback port), JWKS (private JWK Set as JSON; the first
// key signs). Prints "READY <issuer>" once listening. Restarting it with a
// JWKS that has a new first key rotates the signing key.
//
// Issues client-credentials tokens: JWT (typ at+jwt) for the resource
// indicators https://api.test/ and https://other.test/ (RFC 8707), opaque
// when no resource is requested. Introspection and revocation are enabled.
// Sender-constrained tokens: a DPoP proof at the token endpoint binds the
// token to its key (cnf.jkt, RFC 9449); the client "mtls-app" gets tokens bound
// to the certificate passed URL-encoded in the x-client-cert header (cnf.x5t#S256,
// RFC 8705; this fixture has no TLS listener, so the header stands in for it).
import Provider, { errors } from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const RESOURCES = {
  'https://api.test/': 'read write',
  'https://other.test/': 'read write',
  // An MCP server's canonical URI (RFC 8707 audience for tests/test_mcp.py).
  'https://mcp.test/mcp': 'mcp:tools read',
};

const client = (id, secret, method) => ({
  client_id: id,
  client_secret: secret,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: method,
  scope: 'read write mcp:tools',
});

const provider = new Provider(issuer, {
  clients: [
    client('app', 'app-secret', 'client_secret_basic'),
    client('rs-basic', 'rs-basic-secret', 'client_secret_basic'),
    client('rs-post', 'rs-post-secret', 'client_secret_post'),
    { ...client('mtls-app', 'mtls-app-secret', 'client_secret_basic'), tls_client_certificate_bound_access_tokens: true },
  ],
  jwks: JSON.parse(process.env.JWKS),
  scopes: ['read', 'write', 'mcp:tools'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    dPoP: { enabled: true },
    // RFC 9701: signed introspection answers for clients that Accept them.
    jwtIntrospection: { enabled: true },
    mTLS: {
      enabled: true,
      certificateBoundAccessTokens: true,
      getCertificate(ctx) {
        const value = ctx.get('x-client-cert');
        return value ? decodeURIComponent(value) : undefined;
      },
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo(ctx, resourceIndicator) {
        if (!(resourceIndicator in RESOURCES)) throw new errors.InvalidTarget();
        return {
          scope: RESOURCES[resourceIndicator],
          audience: resourceIndicator,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  enabledJWA: { dPoPSigningAlgValues: ['ES256', 'EdDSA', 'PS256', 'RS256'] },
  ttl: { ClientCredentials: 300 },
});
provider.proxy = false;

provider.on('server_error', (ctx, err) => { process.stderr.write(`server_error: ${err.stack}\n`); });
const server = provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`READY ${issuer}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
