import { createHash } from 'node:crypto';
import { AccessScope, needsUpgrade, rolesOf, verifyPassword, type AccessReads, type Principal, type Store, type StoredObject } from '@meridian/store';
import type { AdminAuth } from './admin-auth.js';
import { parseBasic } from '@meridian/xml';

/**
 * Who a user name and password belong to: the admin, or a person (the
 * schema's access section names the type, the login fields and the
 * password field). The gateways and the master's check of forwarded writes
 * use this one function, so a password works the same everywhere.
 * Successful checks are remembered by a fast digest of hash and password,
 * so a slow scrypt is paid once per password and process, not per request.
 */
export class Principals {
  private readonly verified = new Set<string>();
  /**
   * Who a user name and password were, with what proves it still holds (the
   * person's version: a changed password, role or organisation changes it;
   * the admin's password does not change while a node runs). A request
   * repeated with the same credential then skips the person's lookup.
   */
  private readonly signedIn = new Map<string, { principal: Principal; credential: { user: string; password: string }; version: string | undefined }>();

  constructor(
    private readonly store: Store,
    private readonly admin: AdminAuth,
  ) {}

  /**
   * Who an HTTP Authorization header belongs to. Keyed by the header as sent
   * (it is the credential, already in memory with each request): a hit costs
   * one map lookup and, for a person, one cached read, which the read path
   * of a website or cache pays on every request.
   */
  async fromHeader(authorization: string | undefined): Promise<{ principal: Principal; credential: { user: string; password: string } } | undefined> {
    if (authorization === undefined) return undefined;
    const known = this.signedIn.get(authorization);
    if (known && (known.principal.kind === 'admin' || (await this.store.get(known.principal.id))?.version === known.version)) return known;
    const credential = parseBasic(authorization);
    const found = credential && (await this.find(credential.user, credential.password));
    if (!found || !credential) return undefined;
    // the version of the very record the password and roles were taken from: one read after it
    // could be a reset's or a demotion's, and would vouch for the old password and roles until the next change
    const entry = { principal: found.principal, credential, version: found.version };
    // Kept only under the header's one spelling: base64 read past whitespace and other spellings of the
    // scheme, so one login sent in 10,000 spellings of up to 16 KiB each held them all.
    if (authorization !== `Basic ${Buffer.from(`${credential.user}:${credential.password}`).toString('base64')}`) return entry;
    if (this.signedIn.size >= 10_000) this.signedIn.clear();
    this.signedIn.set(authorization, entry);
    return entry;
  }

  async authenticate(user: string, password: string): Promise<Principal | undefined> {
    return (await this.find(user, password))?.principal;
  }

  /** The principal a name and password are, and the version of the person record that says so. */
  private async find(user: string, password: string): Promise<{ principal: Principal; version: string | undefined } | undefined> {
    // an empty password is no password (an LDAP bind with one is anonymous): it signs no one in
    if (password.length === 0) return undefined;
    if (user === 'admin') return (await this.admin.check(user, password)) ? { principal: { kind: 'admin', name: 'admin' }, version: undefined } : undefined;
    const rules = this.store.schema.access;
    if (!rules) return undefined;
    // Each login field in turn, to the one whose person the password is: a value one person has as
    // uid may be another's mail (a uid may hold "@"), and the first match must not lock the second out.
    let checked = false;
    for (const field of rules.login) {
      const found = (await this.store.lookup(rules.principalType, field, user)).items[0];
      checked ||= found !== undefined;
      const principal = found && (await this.person(found, user, password));
      if (principal) return { principal, version: found.version };
    }
    // a name that is no one's takes as long to refuse as a wrong password (see check())
    if (!checked) await this.check(undefined, password);
    return undefined;
  }

  /**
   * Whether a password is this person's, for a gateway that has already
   * found the person (an LDAP bind by DN): the principal, signed in as
   * `user`, or undefined.
   */
  async person(found: StoredObject, user: string, password: string): Promise<Principal | undefined> {
    const rules = this.store.schema.access;
    if (!rules || password.length === 0 || found.deleted || found.type !== rules.principalType) return undefined;
    if (!(await this.check(found.fields[rules.passwordField], password))) return undefined;
    const org = found.fields[rules.organisationField];
    return {
      kind: 'person',
      name: user,
      id: found.id,
      type: found.type,
      roles: rolesOf(rules, found.fields),
      organisation: typeof org === 'string' ? org : undefined,
    };
  }

  /**
   * Whether `password` is the one `hash` holds. Every refusal costs a scrypt
   * check, so that how long one takes does not tell whether the name is
   * someone's: a decoy for no hash (no one, or a person with no password),
   * and beside the one SHA-1 of an imported {SSHA} hash.
   */
  private async check(hash: unknown, password: string): Promise<boolean> {
    if (typeof hash !== 'string') {
      await this.store.decoyPasswordCheck(password);
      return false;
    }
    const key = createHash('sha256').update(hash).update('\0').update(password).digest('base64');
    if (this.verified.has(key)) return true;
    if (needsUpgrade(hash)) await this.store.decoyPasswordCheck(password);
    if (!(await verifyPassword(password, hash))) return false;
    if (this.verified.size > 10_000) this.verified.clear();
    this.verified.add(key);
    return true;
  }

  /** The principal's view for this request. */
  scope(p: Principal): Promise<AccessScope> {
    return AccessScope.of(p, this.store.schema.access, this.store.schema.types, accessReads(this.store));
  }
}

export function accessReads(store: Store): AccessReads {
  return {
    lookup: async (type, field, value) => {
      const ids: string[] = [];
      let after: string | undefined;
      do {
        const page = await store.lookup(type, field, value, { limit: 1000, after });
        ids.push(...page.items.map((o) => o.id));
        after = page.next;
      } while (after && ids.length < 100_000);
      return ids;
    },
  };
}
