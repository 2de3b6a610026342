import { MeridianError } from './errors.js';
import type { FieldValue } from './codec.js';
import { validationFailure, type TypeDef } from './schema.js';

/**
 * Who may read and write what through the gateways, from the schema's
 * `access` section (the admin may do everything and is not described
 * there). Principals are objects of one type (persons) that log in by one
 * of some fields and a password field; each belongs to an organisation and
 * holds roles. A role either sees everything (`all`) or sees organisations
 * in its scope and the objects of listed types that belong to them, an
 * object belonging to the organisation its reference to the organisation
 * type names. Every principal reads itself and edits the `self` fields.
 */
export interface AccessRules {
  principalType: string;
  /** fields a user name is matched against, in order */
  login: readonly string[];
  passwordField: string;
  /** the principal's reference to its organisation */
  organisationField: string;
  organisationType: string;
  rolesField: string;
  /** roles that read and write everything */
  all: ReadonlySet<string>;
  roles: ReadonlyMap<string, RoleRule>;
  /** fields a principal may change on its own object */
  self: ReadonlySet<string>;
}

export interface RoleRule {
  /** `own`: the principal's organisation; `{ by: f }`: organisations whose field f refers to it */
  organisations: 'own' | { by: string };
  read: ReadonlySet<string>;
  write: ReadonlySet<string>;
}

/** Someone authenticated at a gateway. */
export type Principal =
  | { kind: 'admin'; name: 'admin' }
  | { kind: 'person'; name: string; id: string; type: string; roles: readonly string[]; organisation: string | undefined };

export function principalName(p: Principal): string {
  return p.kind === 'admin' ? 'admin' : `${p.type}:${p.id}`;
}

type Raw = Record<string, unknown>;
const isRecord = (v: unknown): v is Raw => typeof v === 'object' && v !== null && !Array.isArray(v);

function fail(source: string, problem: string): MeridianError {
  return new MeridianError('bad-request', `schema ${source} access: ${problem}`);
}

export function parseAccess(raw: unknown, types: ReadonlyMap<string, TypeDef>, source: string): AccessRules | undefined {
  if (raw === undefined) return undefined;
  if (!isRecord(raw)) throw fail(source, 'must be a mapping');
  const str = (k: string): string => {
    const v = raw[k];
    if (typeof v !== 'string') throw fail(source, `"${k}" must name a ${k === 'principal' ? 'type' : 'field'}`);
    return v;
  };
  const list = (v: unknown, what: string): string[] => {
    if (v === undefined) return [];
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw fail(source, `${what} must be a list of names`);
    return v as string[];
  };
  const principalType = str('principal');
  const def = types.get(principalType);
  if (!def) throw fail(source, `principal type "${principalType}" is not in the schema`);
  const field = (name: string, kinds: string[], what: string): string => {
    const f = def.fields.get(name);
    if (!f || !kinds.includes(f.kind)) throw fail(source, `${what} "${name}" must be a ${kinds.join(' or ')} field of ${principalType}`);
    return name;
  };
  const login = list(raw['login'], 'login').map((n) => field(n, ['string'], 'login field'));
  for (const n of login) if (!def.fields.get(n)!.unique) throw fail(source, `login field "${n}" must be unique`);
  const passwordField = field(str('password'), ['password'], 'password');
  const organisationField = field(str('organisation'), ['ref'], 'organisation');
  const organisationType = def.fields.get(organisationField)!.to!;
  const rolesField = field(str('roleField'), ['enum', 'string'], 'roleField');
  const checkTypes = (names: string[], what: string): Set<string> => {
    for (const t of names) if (!types.has(t)) throw fail(source, `${what} names unknown type "${t}"`);
    return new Set(names);
  };
  const roles = new Map<string, RoleRule>();
  const rawRoles = raw['roles'] === undefined ? {} : raw['roles'];
  if (!isRecord(rawRoles)) throw fail(source, '"roles" must map role names to rules');
  for (const [role, r] of Object.entries(rawRoles)) {
    if (!isRecord(r)) throw fail(source, `role ${role} must be a mapping`);
    const o = r['organisations'];
    let organisations: RoleRule['organisations'];
    if (o === 'own') organisations = 'own';
    else if (isRecord(o) && typeof o['by'] === 'string') {
      const by = types.get(organisationType)!.fields.get(o['by']);
      if (!by || by.kind !== 'ref' || by.to !== organisationType) throw fail(source, `role ${role}: "${o['by']}" must be a reference of ${organisationType} to ${organisationType}`);
      organisations = { by: o['by'] };
    } else throw fail(source, `role ${role}: organisations must be "own" or { by: field }`);
    roles.set(role, { organisations, read: checkTypes(list(r['read'], `role ${role} read`), `role ${role}`), write: checkTypes(list(r['write'], `role ${role} write`), `role ${role}`) });
  }
  const self = new Set(list(raw['self'], 'self'));
  for (const n of self) if (!def.fields.has(n)) throw fail(source, `self field "${n}" is not a field of ${principalType}`);
  if (self.has(rolesField) || self.has(organisationField)) throw fail(source, 'a person may not edit their own roles or organisation');
  return { principalType, login, passwordField, organisationField, organisationType, rolesField, all: new Set(list(raw['all'], 'all')), roles, self };
}

/** The roles a person's fields give it (the role field, one value or several). */
export function rolesOf(rules: AccessRules, fields: Readonly<Record<string, FieldValue>>): string[] {
  const v = fields[rules.rolesField];
  return Array.isArray(v) ? v.map(String) : typeof v === 'string' ? [v] : [];
}

/** What a scope needs to look up. */
export interface AccessReads {
  lookup(type: string, field: string, value: string): Promise<string[]>;
}

export interface Accessible {
  id: string;
  type: string;
  fields: Readonly<Record<string, FieldValue>>;
}

/**
 * One principal's view, computed once per request: the organisations each
 * of its roles reaches. Reading an object outside it is "not found", so
 * nothing reveals that the object exists.
 */
export class AccessScope {
  private constructor(
    readonly principal: Principal,
    private readonly rules: AccessRules | undefined,
    private readonly types: ReadonlyMap<string, TypeDef>,
    readonly everything: boolean,
    /** per role: the organisations it reaches */
    private readonly reach: { rule: RoleRule; orgs: ReadonlySet<string> }[],
  ) {}

  static async of(principal: Principal, rules: AccessRules | undefined, types: ReadonlyMap<string, TypeDef>, reads: AccessReads): Promise<AccessScope> {
    if (principal.kind === 'admin') return new AccessScope(principal, rules, types, true, []);
    if (!rules) return new AccessScope(principal, rules, types, false, []);
    if (principal.roles.some((r) => rules.all.has(r))) return new AccessScope(principal, rules, types, true, []);
    const reach: { rule: RoleRule; orgs: ReadonlySet<string> }[] = [];
    const own = principal.organisation;
    for (const role of principal.roles) {
      const rule = rules.roles.get(role);
      if (!rule || own === undefined) continue;
      const orgs = rule.organisations === 'own' ? [own] : await reads.lookup(rules.organisationType, rule.organisations.by, own);
      reach.push({ rule, orgs: new Set(orgs) });
    }
    return new AccessScope(principal, rules, types, false, reach);
  }

  /**
   * Whether the principal could read `o` at a time when its organisation
   * was `org` (the organisation's fields then; `o` itself for an
   * organisation): canRead, but with the organisation's reach judged from
   * those fields rather than from the store as it is now. History needs it:
   * a customer that a reseller took over keeps its versions from before.
   */
  couldRead(o: Accessible, org: Accessible | undefined): boolean {
    if (this.everything || this.isSelf(o)) return true;
    if (this.types.get(o.type)?.system) return false;
    const id = this.orgOf(o);
    if (id === undefined) return false;
    // (an organisation whose fields then are not known is reached by no rule that looks at them)
    const then: Accessible = { id, type: this.rules!.organisationType, fields: org?.id === id ? org.fields : {} };
    return this.reach.some(({ rule }) => rule.read.has(o.type) && this.stillReached(rule, then));
  }

  /** Whether couldRead of an object of `type` needs its organisation's fields: a rule reaching it by a field of the organisation reads the type. */
  readsThroughOrganisation(type: string): boolean {
    return !this.everything && this.reach.some(({ rule }) => rule.organisations !== 'own' && rule.read.has(type));
  }

  /** The organisation an object belongs to: itself, or what its reference to the organisation type names. */
  orgOf(o: Accessible): string | undefined {
    const orgType = this.rules?.organisationType;
    if (orgType === undefined) return undefined;
    if (o.type === orgType) return o.id;
    const def = this.types.get(o.type);
    if (!def) return undefined;
    for (const f of def.fields.values()) {
      if (f.kind === 'ref' && f.to === orgType && !f.multi) {
        const v = o.fields[f.name];
        if (typeof v === 'string') return v;
      }
    }
    return undefined;
  }

  /**
   * Whether an organisation, as it is or as a write would leave it, is
   * still one the rule reaches: the reach was worked out from the store
   * before the write, so a reseller-admin's write that takes its reseller
   * out of a customer would otherwise pass, moving the customer (and its
   * persons, hosts and licenses) out of the principal's reach. Other types
   * belong to the organisation they name, which is checked against the reach.
   */
  private stillReached(rule: RoleRule, x: Accessible): boolean {
    if (x.type !== this.rules?.organisationType) return true;
    const own = this.principal.kind === 'person' ? this.principal.organisation : undefined;
    if (rule.organisations === 'own') return x.id === own;
    const v = x.fields[rule.organisations.by];
    return Array.isArray(v) ? v.includes(own as string) : v === own;
  }

  /**
   * Whether a write may point a reference at `target`: one the principal
   * reads, or one of no organisation's (a product, a release: a catalogue
   * every license names). Another organisation's object may not be named,
   * as if it did not exist.
   */
  mayReferTo(target: Accessible): boolean {
    if (this.everything || this.canRead(target)) return true;
    return !this.types.get(target.type)?.system && this.orgOf(target) === undefined;
  }

  /** The definition of a type of the schema the scope was made from. */
  typeDef(type: string): TypeDef | undefined {
    return this.types.get(type);
  }

  /** Whether `o` is the principal's own entry. */
  isSelf(o: Accessible): boolean {
    return this.principal.kind === 'person' && o.id === this.principal.id && o.type === this.principal.type;
  }

  canRead(o: Accessible): boolean {
    if (this.everything || this.isSelf(o)) return true;
    if (this.types.get(o.type)?.system) return false;
    const org = this.orgOf(o);
    return org !== undefined && this.reach.some((r) => r.rule.read.has(o.type) && r.orgs.has(org));
  }

  /**
   * Whether the principal may change `before` into `after` (create: no
   * before; delete: no after). Both sides must be in its scope, so nothing
   * can be moved out of it or made outside it.
   */
  canWrite(before: Accessible | undefined, after: Accessible | undefined, changed: readonly string[]): boolean {
    if (this.everything) return true;
    const o = before ?? after!;
    if (this.types.get(o.type)?.system) return false;
    if (before && after && this.isSelf(before) && changed.every((f) => this.rules?.self.has(f))) return true;
    const inScope = (x: Accessible): boolean => {
      const org = this.orgOf(x);
      return org !== undefined && this.reach.some((r) => r.rule.write.has(x.type) && r.orgs.has(org) && this.stillReached(r.rule, x));
    };
    return (!before || inScope(before)) && (!after || inScope(after));
  }

  /**
   * Whether the principal may give `role` to someone: never a role that
   * sees everything, and otherwise only a role defined here that reads and
   * writes no type one of its own roles does not. Without this a
   * reseller-admin, who may edit its customers' persons, could make one of
   * them staff and sign in as it.
   */
  mayGrant(role: string): boolean {
    if (this.everything) return true;
    const rule = this.rules?.roles.get(role);
    if (!rule || this.rules!.all.has(role)) return false;
    return this.reach.some(({ rule: own }) => [...rule.read].every((t) => own.read.has(t)) && [...rule.write].every((t) => own.write.has(t)));
  }

  /** The roles `after` holds that `before` did not, on the principal type. */
  addedRoles(before: Accessible | undefined, after: Accessible | undefined): string[] {
    const rules = this.rules;
    if (!rules || !after || after.type !== rules.principalType) return [];
    const had = new Set(before ? rolesOf(rules, before.fields) : []);
    return rolesOf(rules, after.fields).filter((r) => !had.has(r));
  }

  passwordFields(type: string): string[] {
    return [...(this.types.get(type)?.fields.values() ?? [])].filter((f) => f.kind === 'password').map((f) => f.name);
  }

  /** Fields a principal may change on itself. */
  get selfFields(): ReadonlySet<string> {
    return this.rules?.self ?? new Set();
  }
}

export type WriteOp = 'create' | 'update' | 'replace' | 'delete' | 'undelete';

/** A read for authorizeWrite() that answers the object a request has read already without reading it again. */
export function readerKnowing<T extends { id: string }>(o: T, get: (id: string) => Promise<T | undefined>): (id: string) => Promise<T | undefined> {
  return (id) => (id === o.id ? Promise.resolve(o) : get(id));
}

/**
 * Checks that `scope` may make a write, the same way on every node that
 * sees it (the gateway that takes it, and the master a replica forwards it
 * to): an object the principal cannot read is "not found"; one it can read
 * but not change this way is "forbidden", naming why.
 */
export async function authorizeWrite(
  scope: AccessScope,
  get: (id: string) => Promise<Accessible & { deleted: boolean } | undefined>,
  op: WriteOp,
  id: string,
  type: string | undefined,
  fields: Readonly<Record<string, unknown>> | undefined,
  opts: { lagging?: boolean | undefined } = {},
): Promise<void> {
  if (scope.everything) return;
  const current = op === 'create' ? undefined : await get(id);
  const before = current && (!current.deleted || op === 'undelete') ? current : undefined;
  if (op !== 'create' && (!before || !scope.canRead(before))) throw new MeridianError('not-found', `no object ${id}`);
  const set = (base: Readonly<Record<string, FieldValue>>, changes: Readonly<Record<string, unknown>>): Record<string, FieldValue> => {
    const out: Record<string, FieldValue> = { ...base };
    for (const [k, v] of Object.entries(changes)) {
      if (v === null || v === undefined) delete out[k];
      else out[k] = v as FieldValue;
    }
    return out;
  };
  let after: Accessible | undefined;
  let changed: string[] = [];
  switch (op) {
    case 'create':
      after = { id, type: type!, fields: set({}, fields ?? {}) };
      changed = Object.keys(fields ?? {});
      break;
    case 'update':
      after = { ...before!, fields: set(before!.fields, fields ?? {}) };
      changed = Object.keys(fields ?? {});
      break;
    case 'replace': {
      const next = set({}, fields ?? {});
      // a replace keeps password fields it does not give (see Store.replace): they do not change
      for (const f of scope.passwordFields(before!.type)) if (next[f] === undefined && before!.fields[f] !== undefined) next[f] = before!.fields[f]!;
      after = { ...before!, fields: next };
      changed = [...new Set([...Object.keys(before!.fields), ...Object.keys(next)])].filter((k) => JSON.stringify(before!.fields[k]) !== JSON.stringify(next[k]));
      break;
    }
    case 'delete':
      after = undefined;
      break;
    case 'undelete':
      after = before;
      break;
  }
  if (!scope.canWrite(before, after, changed)) {
    const what = before ? `${before.type} ${before.id}` : `a new ${type}`;
    const self = before !== undefined && scope.isSelf(before);
    const why = self ? `; on your own entry you may change only ${[...scope.selfFields].join(', ')}` : '';
    throw new MeridianError('forbidden', `you may not ${op === 'create' ? 'create' : op === 'delete' ? 'delete' : 'change'} ${what}${why}`);
  }
  // Setting someone else's password lets one sign in as them: only those who
  // see everything may, whatever else a role lets its holder edit. (A new
  // person's first password is the creator's to give.)
  if (before && after && !scope.isSelf(before)) {
    const pw = scope.passwordFields(before.type).find((f) => changed.includes(f));
    if (pw) throw new MeridianError('forbidden', `you may not set the ${pw} of ${before.type} ${before.id}: a person sets their own, and staff or the admin anyone's`);
  }
  for (const role of scope.addedRoles(before, after)) {
    if (!scope.mayGrant(role)) {
      throw new MeridianError('forbidden', `you may not give the role "${role}": you may give only roles that see no more than one of your own`);
    }
  }
  // A reference the write sets to an object the principal may not name is refused as one to a
  // missing object, whether it exists or not: else the answer (deleted, of another type) tells
  // which ids exist, and a license could be tied to another tenant's host. One to no object is
  // refused here too, before the store's other checks: refused after them, as the store does, a
  // request also wrong otherwise (a bad value, a required field left out) would be answered for
  // that where one naming another tenant's object is answered for the reference. Except where
  // the store read may lag the one that makes the write (`lagging`: a replica, which forwards it):
  // there an object not here yet is left for that node to judge, which it does the same way.
  const def = after && scope.typeDef(after.type);
  for (const f of def?.fields.values() ?? []) {
    if (f.kind !== 'ref' || !changed.includes(f.name)) continue;
    const v = after!.fields[f.name];
    for (const ref of v === undefined ? [] : Array.isArray(v) ? v : [v]) {
      const target = await get(String(ref));
      if (target ? !scope.mayReferTo(target) : !opts.lagging) {
        throw validationFailure(def!, op === 'create' ? undefined : id, f.name, 'reference', `refers to missing object ${String(ref)}`);
      }
    }
  }
}
