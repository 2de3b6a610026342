/**
 * Fuzzes the LDAP gateway's request parsing: valid requests of every kind,
 * mutated (bytes flipped, lengths changed, cut short, spliced together),
 * sent on many connections to a node in this process. An uncaught error
 * would end this process; the node must still answer a real client after.
 */
import t from 'tap';
import { connect } from 'node:net';
import { integer, octets, tlv } from '../packages/ldap/dist/ber.js';
import { berTree } from '../packages/ldap/dist/validate.js';
import { ADMIN_PW, seed, startXmlNode } from './helpers/xml-node.js';
import { freePort } from './helpers/free-port.js';
import { ldapTool, parseLdif } from './helpers/ldap-utils.js';
import { prng } from './helpers/prng.js';

const BASE = 'dc=example,dc=com';
const msg = (id: number, op: Buffer, controls?: Buffer): Buffer => tlv(0x30, [integer(id), op, ...(controls ? [controls] : [])]);

function requests(): Buffer[] {
  const bind = msg(1, tlv(0x60, [integer(3), octets(`cn=admin,${BASE}`), octets(ADMIN_PW, 0x80)]));
  const substring = tlv(0xa4, [octets('cn'), tlv(0x30, [octets('jo', 0x81)])]);
  const filter = tlv(0xa1, [substring, tlv(0xa3, [octets('mail'), octets('a@b.c')]), tlv(0xa2, tlv(0xa5, [octets('sn'), octets('m')])), octets('uid', 0x87)]);
  const search = msg(2, tlv(0x63, [octets(BASE), integer(2, 0x0a), integer(0, 0x0a), integer(10), integer(5), Buffer.from([0x01, 0x01, 0x00]), filter, tlv(0x30, [octets('cn'), octets('+')])]),
    tlv(0xa0, tlv(0x30, [octets('1.2.840.113556.1.4.319'), octets(tlv(0x30, [integer(5), octets('')]))])));
  const modify = msg(3, tlv(0x66, [octets(`meridianId=per-c1,ou=people,${BASE}`), tlv(0x30, tlv(0x30, [integer(2, 0x0a), tlv(0x30, [octets('title'), tlv(0x31, octets('Fuzzed'))])]))]));
  const passwd = msg(4, tlv(0x77, [octets('1.3.6.1.4.1.4203.1.11.1', 0x80), octets(tlv(0x30, [octets('uid=contact1', 0x80), octets('old', 0x81), octets('new', 0x82)]), 0x81)]));
  const compare = msg(5, tlv(0x6e, [octets(`meridianId=per-c1,ou=people,${BASE}`), tlv(0x30, [octets('sn'), octets('contact1')])]));
  const whoami = msg(6, tlv(0x77, octets('1.3.6.1.4.1.4203.1.11.3', 0x80)));
  return [bind, search, modify, passwd, compare, whoami];
}

function mutate(rnd: () => number, seeds: Buffer[]): Buffer {
  const pick = seeds[Math.floor(rnd() * seeds.length)]!;
  const b = Buffer.from(pick);
  switch (Math.floor(rnd() * 5)) {
    case 0:
      for (let i = 0; i < 1 + rnd() * 4; i++) b[Math.floor(rnd() * b.length)] = Math.floor(rnd() * 256);
      return b;
    case 1:
      return b.subarray(0, Math.floor(rnd() * b.length));
    case 2: {
      // a length byte inside changed: the classic way to confuse a BER reader
      const i = 1 + Math.floor(rnd() * (b.length - 1));
      b[i] = [0x00, 0x7f, 0x80, 0x81, 0x84, 0xff][Math.floor(rnd() * 6)]!;
      return b;
    }
    case 3:
      return Buffer.concat([b, seeds[Math.floor(rnd() * seeds.length)]!.subarray(Math.floor(rnd() * 10))]);
    default:
      return Buffer.concat([b.subarray(0, 2), Buffer.from(Array.from({ length: Math.floor(rnd() * 64) }, () => Math.floor(rnd() * 256))), b.subarray(2)]);
  }
}

/** Sends the requests on a fresh connection; resolves with how many whole LDAP messages came back. */
function send(port: number, bytes: Buffer[]): Promise<number> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const s = connect(port, '127.0.0.1', () => {
      for (const b of bytes) s.write(b);
      s.end();
    });
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', () => {});
    s.on('close', () => {
      const got = Buffer.concat(chunks);
      resolve(got.length === 0 ? 0 : (berTree(got)?.filter((m) => m.tag === 0x30).length ?? 0));
    });
    setTimeout(() => s.destroy(), 2000);
  });
}

t.test('mutated requests never take the node down', async (t) => {
  const port = await freePort();
  const node = await startXmlNode(t, { ldapPort: port });
  await seed(node);
  const seeds = requests();
  const rnd = prng(2026);
  let answered = 0;
  for (let round = 0; round < 40; round++) {
    // a valid bind first half the time, so mutated operations reach the handlers as a bound client
    const counts = await Promise.all(
      Array.from({ length: 25 }, () => {
        const bind = rnd() < 0.5;
        return send(port, [...(bind ? [seeds[0]!] : []), mutate(rnd, seeds), mutate(rnd, seeds)]).then((n) => Math.max(0, n - (bind ? 1 : 0)));
      }),
    );
    answered += counts.reduce((a, b) => a + b, 0);
  }
  // (a gateway that dropped every connection at the first byte would pass the rest)
  t.ok(answered >= 50, `${answered} of the 2,000 mutated requests were answered with an LDAP message: they reached the handlers`);
  const r = await ldapTool('ldapsearch', ['-x', '-LLL', '-H', `ldap://127.0.0.1:${port}`, '-D', `cn=admin,${BASE}`, '-w', ADMIN_PW, '-b', BASE, '(uid=contact1)', 'sn']);
  t.equal(r.code, 0, r.stderr);
  t.same(parseLdif(r.stdout)[0]?.attrs['sn'], ['contact1'], 'the directory answers and its data is intact');
  const c1 = await node.store.get('per-c1');
  t.ok(c1 && !c1.deleted && c1.fields['cn'] === 'Person contact1', 'the stored person is unharmed');
});
