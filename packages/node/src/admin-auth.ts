import { createHash, randomBytes } from 'node:crypto';
import { hashPassword, verifyPassword, type Store } from '@meridian/store';

/**
 * The admin principal. Only a salted scrypt hash of its password is stored.
 * Successful checks are remembered by a fast digest for the life of the
 * process, so the CLI and scripts do not pay a slow hash on every request.
 */
export class AdminAuth {
  private readonly verified = new Set<string>();

  private constructor(
    private hash: string,
    /** set only when this start generated the password: print it once */
    readonly generated: string | undefined,
  ) {}

  static async init(store: Store, given: string | undefined): Promise<AdminAuth> {
    const stored = await store.getMeta<string>('adminHash');
    if (given !== undefined) {
      const auth = new AdminAuth(stored ?? '', undefined);
      if (!stored || !(await verifyPassword(given, stored))) {
        auth.hash = await hashPassword(given);
        await store.setMeta('adminHash', auth.hash);
      }
      return auth;
    }
    if (stored) return new AdminAuth(stored, undefined);
    // stored by keepGenerated(), once the node has started: a first start that fails (its port
    // taken) would otherwise keep a hash of a password it never showed, and lock the admin out
    const generated = randomBytes(12).toString('base64url');
    return new AdminAuth(await hashPassword(generated), generated);
  }

  /** Stores the hash of a password this start generated, once the node serves: then it is shown. */
  async keepGenerated(store: Store): Promise<void> {
    if (this.generated !== undefined) await store.setMeta('adminHash', this.hash);
  }

  async check(user: string, password: string): Promise<boolean> {
    if (user !== 'admin' || password.length === 0) return false;
    const key = createHash('sha256').update(this.hash).update('\0').update(password).digest('base64');
    if (this.verified.has(key)) return true;
    if (!(await verifyPassword(password, this.hash))) return false;
    if (this.verified.size > 1000) this.verified.clear();
    this.verified.add(key);
    return true;
  }
}
