import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

/**
 * List cursors, sealed (AES-256-GCM) with a key of the node's: a cursor
 * names the id a list resumes after, which after a scan of objects the
 * caller may not read is one of those, so in the clear it would tell the
 * caller an id it must not learn. A cursor is good on the node that handed
 * it out; any other is refused as not one of this node's.
 */
/** Sealed text is padded to a multiple of this many bytes. */
const PAD = 48;

export class CursorSeal {
  constructor(private readonly key: Buffer) {
    if (key.length !== 32) throw new Error('a cursor key is 32 bytes');
  }

  seal(id: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    // Padded with NULs (no id or cookie holds one) to a multiple of PAD bytes: GCM keeps the length, and an
    // LDAP paging cookie's length told how many digits the position in the whole index had.
    const text = Buffer.from(id, 'utf8');
    const padded = Buffer.alloc(Math.ceil((text.length + 1) / PAD) * PAD);
    text.copy(padded);
    const body = Buffer.concat([cipher.update(padded), cipher.final()]);
    return Buffer.concat([iv, body, cipher.getAuthTag()]).toString('base64url');
  }

  /** The id a cursor names; undefined if this node did not seal it (or it was changed). */
  open(cursor: string): string | undefined {
    const all = Buffer.from(cursor, 'base64url');
    if (all.length < 12 + 16) return undefined;
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.key, all.subarray(0, 12));
      decipher.setAuthTag(all.subarray(all.length - 16));
      const text = Buffer.concat([decipher.update(all.subarray(12, all.length - 16)), decipher.final()]);
      const end = text.indexOf(0);
      return text.toString('utf8', 0, end < 0 ? text.length : end);
    } catch {
      return undefined;
    }
  }
}
