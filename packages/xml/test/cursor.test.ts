import t from 'tap';
import { randomBytes } from 'node:crypto';
import { CursorSeal } from '../dist/cursor.js';

t.test('sealed cursors and cookies open to what was sealed, and their length does not tell the length of what they hold', async (t) => {
  const seal = new CursorSeal(randomBytes(32));
  // an LDAP paging cookie: fingerprint, step, slot and total, whose digit counts differ from one index to another
  const texts = ['fp:1:7:9', 'fp:1:7000000:9000000', 'per-x', 'per-'.padEnd(47, 'y'), ''];
  const sealed = texts.map((x) => seal.seal(x));
  t.same(sealed.map((x) => seal.open(x)), texts, 'each opens to its text');
  t.equal(new Set(sealed.map((x) => x.length)).size, 1, `one length for all of them: ${sealed[0]!.length} characters`);
  t.ok(seal.seal('x'.repeat(48)).length > sealed[0]!.length, 'a longer text takes the next size');
  t.equal(seal.open(sealed[0]!.slice(0, -2) + (sealed[0]!.endsWith('A') ? 'BA' : 'AA')), undefined, 'a changed cursor opens to nothing');
  const other = new CursorSeal(randomBytes(32));
  t.equal(other.open(sealed[1]!), undefined, "another node's key opens nothing");
});
