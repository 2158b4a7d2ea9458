// A real OAuth 2 / OpenID Connect authorization server for keyport's end-to-end tests:
// oidc-provider with PKCE required (S256), refresh-token rotation with reuse detection,
// RFC 7009 revocation and RFC 9207 `iss` on authorization responses. Its development
// interactions (login and consent forms) are scripted over HTTP by the tests.
//
// Usage: node server.mjs <port> <redirect_uri> <client_id> <client_secret>
// Prints "listening <issuer>" when ready. Tokens it issues are printed nowhere.
import Provider from 'oidc-provider';

const [port, redirectUri, clientId, clientSecret] = process.argv.slice(2);
if (!port || !redirectUri || !clientId || !clientSecret) {
  console.error('usage: node server.mjs <port> <redirect_uri> <client_id> <client_secret>');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    // OIDC_EXTRA_REDIRECT_URIS (comma-separated): e.g. keyport's single sign-on callback.
    redirect_uris: [redirectUri, ...(process.env.OIDC_EXTRA_REDIRECT_URIS || '').split(',').filter(Boolean)],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
  }],
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  claims: { openid: ['sub'], profile: ['name'], email: ['email', 'email_verified'] },
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    userinfo: { enabled: true },
  },
  rotateRefreshToken: true,
  issueRefreshToken: async (ctx, client, code) =>
    client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
  ttl: {
    AccessToken: Number(process.env.OIDC_ACCESS_TOKEN_TTL || 3600),
    AuthorizationCode: 60,
    RefreshToken: 24 * 3600,
    Grant: 24 * 3600,
    Interaction: 600,
    Session: 3600,
  },
  cookies: { keys: ['keyport-test-cookie-key'] },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, name: `Ada ${id}`, email: `${id}@example.com`, email_verified: true };
      },
    };
  },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err.message));

provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});
