// A real OpenID provider for tests/cli_login.rs: the npm package oidc-provider on
// 127.0.0.1:<ephemeral>, with its development login and consent pages (any user name and
// password log in as that user name).
//
//   node provider.mjs NODE_MODULES_DIR
//
// NODE_MODULES_DIR holds oidc-provider (.ci/run installs tests/oidc/package-lock.json into a
// cache directory). Prints `listening <issuer>` on stdout once it serves.
//
// Clients: `portcullis-cli` (public, PKCE) and `portcullis-confidential` (client secret,
// HTTP Basic), both native applications, so any port of a loopback redirect URI is accepted
// (RFC 8252 section 7.3).

import { createServer } from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const modules = process.argv[2];
if (!modules) {
  console.error('usage: node provider.mjs NODE_MODULES_DIR');
  process.exit(2);
}
const { default: Provider } = await import(
  pathToFileURL(join(modules, 'oidc-provider', 'lib', 'index.js')).href
);

const server = createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const loopback = ['http://127.0.0.1/callback'];
const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'portcullis-cli',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      redirect_uris: loopback,
    },
    {
      client_id: 'portcullis-confidential',
      client_secret: 'confidential-client-secret-0123456789',
      application_type: 'native',
      token_endpoint_auth_method: 'client_secret_basic',
      redirect_uris: loopback,
    },
  ],
  // Every confidential client must use PKCE too, not only public ones.
  pkce: { required: () => true },
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  // The email claims in the ID token itself (the gateway's allowedDomains read them there).
  conformIdTokenClaims: false,
  findAccount: async (_ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, email: `${id}@example.com`, email_verified: true }),
  }),
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['portcullis-test-cookie-key-0123456789'] },
});

server.on('request', provider.callback());
console.log(`listening ${issuer}`);
