import t from 'tap';
import { cli, startNode } from './helpers/node-process.js';
import { makeCerts } from './helpers/certs.js';
import { tempDir } from './helpers/tmp.js';
import { until } from './helpers/wait.js';

const PW = 'test-admin-pw';
const SECRET = 'replication-test-secret';

t.test('masters replicate over wss:// with a configured certificate and CA; an untrusted certificate is refused', async (t) => {
  const certs = makeCerts(tempDir(t));
  const tls = ['--tls-cert', certs.cert, '--tls-key', certs.key];
  const common = ['--admin-password', PW, '--cluster-secret', SECRET, '--heartbeat', '300', '--link-timeout', '1500'];
  const a = await startNode(t, ['--dir', tempDir(t), '--node-id', 'a', ...common, ...tls]);
  t.match(a.url, /^https:\/\/127\.0\.0\.1:\d+$/, 'the node serves HTTPS');
  const wss = `${a.url.replace('https', 'wss')}/sync`;
  const b = await startNode(t, ['--dir', tempDir(t), '--node-id', 'b', ...common, ...tls, '--tls-ca', certs.ca, '--peers', wss]);
  const untrusting = await startNode(t, ['--dir', tempDir(t), '--node-id', 'u', ...common, '--peers', wss]);
  const env = { MERIDIAN_PASSWORD: PW, NODE_EXTRA_CA_CERTS: certs.ca };

  const id = cli(['put', 'Organisation', 'name=Over TLS', 'kind=customer', '--node', a.url], env).stdout.trim();
  t.ok(await until(() => cli(['get', id, '--node', b.url], env).code === 0), 'the write reached b over wss');
  const got = cli(['get', id, '--node', b.url], env);
  t.match(got.stdout, /name\s+Over TLS/);

  const peersOf = (): { state: string; reason: string | null }[] => JSON.parse(cli(['peers', '--json', '--node', untrusting.url], env).stdout);
  await until(() => /certificate/.test(peersOf()[0]?.reason ?? ''));
  const peers = peersOf();
  t.match(peers[0], { state: 'backing-off', reason: /certificate/ }, 'a peer whose certificate is not trusted is not joined');
  t.equal(JSON.parse(cli(['status', '--json', '--node', untrusting.url], env).stdout).objects, 0);
});
