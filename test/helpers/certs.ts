import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** A throwaway CA and a certificate for 127.0.0.1 signed by it, made with openssl. */
export function makeCerts(dir: string): { ca: string; cert: string; key: string } {
  const p = (f: string): string => join(dir, f);
  const run = (args: string[]): void => void execFileSync('openssl', args, { stdio: 'pipe' });
  run(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=Meridian Test CA', '-keyout', p('ca.key'), '-out', p('ca.pem')]);
  run(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', p('node.key'), '-out', p('node.csr')]);
  writeFileSync(p('ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  run(['x509', '-req', '-in', p('node.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial', '-days', '1', '-extfile', p('ext.cnf'), '-out', p('node.pem')]);
  return { ca: p('ca.pem'), cert: p('node.pem'), key: p('node.key') };
}
