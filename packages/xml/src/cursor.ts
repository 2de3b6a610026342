import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

/**
 * List cursors, sealed (AES-256-GCM) with a key of the node's: a cursor
 * names the id a list resumes after, which after a scan of objects the
 * caller may not read is one of those, so in the clear it would tell the
 * caller an id it must not learn. A cursor is good on the node that handed
 * it out; any other is refused as not one of this node's.
 */
export class CursorSeal {
  constructor(private readonly key: Buffer) {
    if (key.length !== 32) throw new Error('a cursor key is 32 bytes');
  }

  seal(id: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    const body = Buffer.concat([cipher.update(id, 'utf8'), cipher.final()]);
    return Buffer.concat([iv, body, cipher.getAuthTag()]).toString('base64url');
  }

  /** The id a cursor names; undefined if this node did not seal it (or it was changed). */
  open(cursor: string): string | undefined {
    const all = Buffer.from(cursor, 'base64url');
    if (all.length < 12 + 16) return undefined;
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.key, all.subarray(0, 12));
      decipher.setAuthTag(all.subarray(all.length - 16));
      return Buffer.concat([decipher.update(all.subarray(12, all.length - 16)), decipher.final()]).toString('utf8');
    } catch {
      return undefined;
    }
  }
}
