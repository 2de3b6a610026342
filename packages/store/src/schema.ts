import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { parse as parseYaml } from 'yaml';
import { MeridianError, ValidationError } from './errors.js';
import type { FieldValue, Scalar } from './codec.js';
import { isValidId } from './ids.js';
import { parseAccess, type AccessRules } from './access.js';

/**
 * The declarative schema: an operator-editable YAML file listing types and
 * their fields. Masters validate every write against it before committing.
 */
export type FieldKind = 'string' | 'integer' | 'number' | 'boolean' | 'date' | 'enum' | 'ref' | 'password';

export interface FieldDef {
  readonly name: string;
  readonly kind: FieldKind;
  readonly required: boolean;
  readonly multi: boolean;
  /** no two live objects of the type share a (case-folded) value */
  readonly unique: boolean;
  /** equality lookups by this field are served from an index */
  readonly indexed: boolean;
  readonly values: readonly string[] | undefined;
  readonly to: string | undefined;
  /** the referenced object must also match these field values */
  readonly where: Readonly<Record<string, string>> | undefined;
  readonly pattern: RegExp | undefined;
  readonly maxLength: number;
  readonly min: number | undefined;
  readonly max: number | undefined;
  readonly ldap: string | undefined;
  readonly description: string | undefined;
}

export interface TypeDef {
  readonly name: string;
  readonly idPrefix: string;
  readonly description: string | undefined;
  readonly ldapObjectClass: readonly string[] | undefined;
  /** the `ou` under the base DN that holds this type's LDAP entries */
  readonly ldapContainer: string | undefined;
  readonly fields: ReadonlyMap<string, FieldDef>;
  /** built in, for the node's own use: the gateways leave it out */
  readonly system?: boolean;
}

/**
 * The built-in type of replica credentials. Masters keep the registry as
 * ordinary objects so that it replicates to every master (a credential
 * issued on one master is accepted by all); only the name and a serial are
 * stored, the key being derived from the cluster secret.
 */
export const REPLICA_TYPE = 'MeridianReplica';
/** The ids of replica credentials: this, then the replica's name (no other type may use such ids). */
export const REPLICA_ID_PREFIX = 'replica.';

export interface Schema {
  readonly name: string;
  readonly types: ReadonlyMap<string, TypeDef>;
  /** who may read and write what through the gateways; absent: only the admin */
  readonly access: AccessRules | undefined;
  /** digest of the schema source, recorded by nodes to notice schema changes */
  readonly digest: string;
}

const KINDS: readonly FieldKind[] = ['string', 'integer', 'number', 'boolean', 'date', 'enum', 'ref', 'password'];
const NAME_RE = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;

/** Whether a string can name a type or a field in any schema (a peer's, whose schema may be newer). */
export function isSchemaName(s: unknown): s is string {
  return typeof s === 'string' && NAME_RE.test(s);
}
const DEFAULT_MAX_LENGTH = 4096;

type Raw = Record<string, unknown>;

function isRecord(v: unknown): v is Raw {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function schemaError(where: string, problem: string): MeridianError {
  return new MeridianError('bad-request', `schema ${where}: ${problem}`);
}

export function loadSchemaFile(path: string): Schema {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new MeridianError('bad-request', `cannot read schema file ${path}: ${(e as Error).message}`);
  }
  return parseSchema(text, path);
}

function ldapContainer(where: string, ldap: Raw | undefined, typeName: string): string | undefined {
  if (!ldap) return undefined;
  const c = ldap['container'] ?? typeName.toLowerCase();
  if (typeof c !== 'string' || !/^[A-Za-z][A-Za-z0-9-]{0,63}$/.test(c)) throw schemaError(where, 'ldap container must be a name of letters, digits and -');
  return c;
}

/**
 * What the YAML parser found wrong, in one line: its first, without the
 * colon that leads to the source it quotes on the next ones.
 */
export function yamlProblem(e: unknown): string {
  return (e as Error).message.split('\n')[0]!.replace(/:\s*$/, '');
}

export function parseSchema(text: string, source = 'schema'): Schema {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw schemaError(source, `is not valid YAML (${yamlProblem(e)})`);
  }
  if (!isRecord(doc) || !isRecord(doc['types'])) throw schemaError(source, 'needs a "types" mapping');
  const types = new Map<string, TypeDef>();
  const prefixes = new Set<string>();
  for (const [typeName, rawType] of Object.entries(doc['types'])) {
    const where = `${source} type ${typeName}`;
    if (!NAME_RE.test(typeName)) throw schemaError(where, 'type names are letters, digits and _');
    if (!isRecord(rawType) || !isRecord(rawType['fields'])) throw schemaError(where, 'needs a "fields" mapping');
    const idPrefix = typeof rawType['idPrefix'] === 'string' ? rawType['idPrefix'] : typeName.slice(0, 3).toLowerCase();
    if (!/^[a-z0-9]{1,8}$/.test(idPrefix)) throw schemaError(where, 'idPrefix must be 1 to 8 lower-case letters or digits');
    if (prefixes.has(idPrefix)) throw schemaError(where, `idPrefix "${idPrefix}" is used by another type`);
    prefixes.add(idPrefix);
    const fields = new Map<string, FieldDef>();
    for (const [fieldName, rawField] of Object.entries(rawType['fields'])) {
      fields.set(fieldName, parseField(`${where} field ${fieldName}`, fieldName, rawField));
    }
    const ldap = isRecord(rawType['ldap']) ? rawType['ldap'] : undefined;
    const oc = ldap?.['objectClass'];
    types.set(typeName, {
      name: typeName,
      idPrefix,
      description: typeof rawType['description'] === 'string' ? rawType['description'] : undefined,
      ldapObjectClass: Array.isArray(oc) ? oc.map(String) : undefined,
      ldapContainer: ldapContainer(where, ldap, typeName),
      fields,
    });
  }
  if (types.has(REPLICA_TYPE)) throw schemaError(`${source} type ${REPLICA_TYPE}`, 'this type name is reserved for replica credentials');
  if (prefixes.has('replica')) throw schemaError(source, 'idPrefix "replica" is reserved for replica credentials');
  types.set(REPLICA_TYPE, {
    name: REPLICA_TYPE,
    idPrefix: 'replica',
    description: 'a replica credential (built in)',
    ldapObjectClass: undefined,
    ldapContainer: undefined,
    system: true,
    fields: new Map([
      ['name', parseField(`${REPLICA_TYPE} field name`, 'name', { type: 'string', required: true, unique: true, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$' })],
      ['serial', parseField(`${REPLICA_TYPE} field serial`, 'serial', { type: 'string', required: true, pattern: '^[0-9a-f]{16}$' })],
      ['issuedBy', parseField(`${REPLICA_TYPE} field issuedBy`, 'issuedBy', { type: 'string', maxLength: 256 })],
    ]),
  });
  for (const t of types.values()) {
    for (const f of t.fields.values()) {
      if (f.kind === 'ref' && !types.has(f.to!)) {
        throw schemaError(`${source} type ${t.name} field ${f.name}`, `refers to unknown type "${f.to}"`);
      }
    }
  }
  return {
    name: typeof doc['name'] === 'string' ? doc['name'] : 'schema',
    types,
    access: parseAccess(doc['access'], types, source),
    digest: createHash('sha256').update(text).digest('hex').slice(0, 16),
  };
}

function parseField(where: string, name: string, raw: unknown): FieldDef {
  if (!NAME_RE.test(name)) throw schemaError(where, 'field names are letters, digits and _');
  const r: Raw = typeof raw === 'string' ? { type: raw } : isRecord(raw) ? raw : {};
  const kind = (r['type'] ?? 'string') as FieldKind;
  if (!KINDS.includes(kind)) throw schemaError(where, `type must be one of ${KINDS.join(', ')}`);
  const values = r['values'];
  if (kind === 'enum' && (!Array.isArray(values) || values.length === 0)) throw schemaError(where, 'an enum needs "values"');
  if (kind === 'ref' && typeof r['to'] !== 'string') throw schemaError(where, 'a ref needs "to"');
  let pattern: RegExp | undefined;
  if (r['pattern'] !== undefined) {
    try {
      pattern = new RegExp(String(r['pattern']), 'u');
    } catch {
      throw schemaError(where, 'pattern is not a valid regular expression');
    }
  }
  const num = (k: string): number | undefined => (typeof r[k] === 'number' ? (r[k] as number) : undefined);
  const unique = r['unique'] === true;
  return {
    name,
    kind,
    required: r['required'] === true,
    multi: r['multi'] === true,
    unique,
    // references are always indexed: "the persons of this organisation" is a common query
    indexed: r['index'] === true || kind === 'ref',
    values: Array.isArray(values) ? values.map(String) : undefined,
    to: typeof r['to'] === 'string' ? r['to'] : undefined,
    where: isRecord(r['where']) ? Object.fromEntries(Object.entries(r['where']).map(([k, v]) => [k, String(v)])) : undefined,
    pattern,
    maxLength: num('maxLength') ?? DEFAULT_MAX_LENGTH,
    min: num('min'),
    max: num('max'),
    ldap: typeof r['ldap'] === 'string' ? r['ldap'] : undefined,
    description: typeof r['description'] === 'string' ? r['description'] : undefined,
  };
}

/** Case folding used by indexes and uniqueness: `Anna@Example.COM` and `anna@example.com` are one value (a reference's id is kept as it is). */
export function foldValue(field: FieldDef, value: Scalar): string {
  const s = String(value);
  return field.kind === 'ref' ? s : foldText(s);
}

/**
 * Text as uniqueness, indexes and LDAP matching compare it: in Unicode NFKC
 * with case folded, as RFC 4518 prepares a string for caseIgnoreMatch.
 * `ＡＮＮＡ`, `Anna` and `anna` are one value, and so
 * are `ﬁnance` and `finance`, `Straße` and `STRASSE`, a decomposed and a
 * composed `Müller`, and `anna` with a zero-width space or a soft hyphen
 * in it and `anna`. The characters RFC 3454 maps to nothing (B.1: soft
 * hyphen, zero-width joiners and spaces, variation selectors, the byte
 * order mark) are dropped; case is folded by lower-, upper- and
 * lower-casing again, which JavaScript's full mappings make full case
 * folding (`ẞ` to `ß` to `SS` to `ss`); NFKC comes first, as a
 * compatibility character can stand for capitals (`ᴬ` is `A`, `㎒` is
 * `MHz`), and again last. (RFC 4518's handling of insignificant spaces is
 * LDAP matching's own: see fold in packages/ldap.)
 */
export function foldText(s: string): string {
  // (most values are ASCII, which lower-casing alone folds: a write folds every indexed field of its object)
  if (ASCII.test(s)) return s.toLowerCase();
  return s.replace(TO_NOTHING, '').normalize('NFKC').toLowerCase().toUpperCase().toLowerCase().normalize('NFKC');
}
const ASCII = /^[\x00-\x7f]*$/;
const TO_NOTHING = /[\u00ad\u034f\u1806\u180b-\u180d\u200b-\u200d\u2060\ufe00-\ufe0f\ufeff]/g;

/**
 * How foldText folds, in the index layout a data dir records
 * (`unique/nfkc-cf`): a dir whose entries were folded otherwise (in NFC
 * and lower case, before this) has them rebuilt at its next open.
 */
export const TEXT_FOLDING = 'nfkc-cf';

/**
 * A looked-up value folded as a write of it would be stored: `05` or `5.0`
 * finds the integer 5, as a write of either stores 5. Undefined for a value
 * no write could store (`abc` for a number): it finds nothing.
 */
export function foldLookup(field: FieldDef, value: string): string | undefined {
  // (folded as text is first, as LDAP matches: a full-width ５ finds 5, ＴＲＵＥ finds true)
  if (field.kind === 'integer' || field.kind === 'number') {
    const t = foldText(value).trim();
    if (!NUMBER_RE.test(t)) return undefined;
    const n = Number(t);
    return Number.isFinite(n) ? foldValue(field, n) : undefined;
  }
  // (filters are case-insensitive: TRUE finds true, though a write takes only true and false)
  if (field.kind === 'boolean') {
    const v = foldText(value).trim();
    return v === 'true' || v === 'false' ? v : undefined;
  }
  return foldValue(field, value);
}
const NUMBER_RE = /^-?\d+(\.\d+)?([eE][-+]?\d+)?$/;

// C0 controls other than tab, newline and carriage return cannot be stored:
// NUL separates index key parts and XML 1.0 cannot carry the others.
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/;
const DATE_RE = /^(\d{4})-(\d{2})-(\d{2})$/;
// Stored text is UTF-8 (records, index keys), which turns a lone surrogate
// into U+FFFD: the value read back, and the index key on disk, would not be
// the value written (and the unique-key filter hashes the string as given).
const LONE_SURROGATE_RE = /\p{Cs}/u;

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v);
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  return String(v);
}

function fail(type: TypeDef, id: string | undefined, field: string | undefined, rule: string, problem: string, withoutHolder?: string): ValidationError {
  const subject = id ? `${type.name} ${id}` : `new ${type.name}`;
  const say = (p: string): string => (field ? `${subject}: field "${field}" ${p}` : `${subject}: ${p}`);
  return new ValidationError({ objectId: id, type: type.name, field, rule, message: say(problem), withoutHolder: withoutHolder === undefined ? undefined : say(withoutHolder) });
}

/**
 * Checks and canonicalises one scalar: strings arriving from the CLI, XML or
 * LDAP become the field's type ("5" -> 5 for an integer), exactly once, here.
 */
function scalar(type: TypeDef, id: string | undefined, f: FieldDef, v: unknown): Scalar {
  switch (f.kind) {
    case 'integer':
    case 'number': {
      let n: number;
      if (typeof v === 'number') n = v;
      else if (typeof v === 'string' && NUMBER_RE.test(v.trim())) n = Number(v.trim());
      else throw fail(type, id, f.name, 'type', `must be ${f.kind === 'integer' ? 'an integer' : 'a number'}, got ${describe(v)}`);
      if (!Number.isFinite(n) || (f.kind === 'integer' && !Number.isSafeInteger(n))) {
        throw fail(type, id, f.name, 'type', `must be ${f.kind === 'integer' ? 'an integer' : 'a number'}, got ${describe(v)}`);
      }
      if (f.min !== undefined && n < f.min) throw fail(type, id, f.name, 'min', `must be at least ${f.min}, got ${n}`);
      if (f.max !== undefined && n > f.max) throw fail(type, id, f.name, 'max', `must be at most ${f.max}, got ${n}`);
      // -0 is 0: MessagePack, JSON and XML cannot tell them apart, and a stored record must read back as written
      return n === 0 ? 0 : n;
    }
    case 'boolean':
      if (typeof v === 'boolean') return v;
      if (v === 'true' || v === 'false') return v === 'true';
      throw fail(type, id, f.name, 'type', `must be true or false, got ${describe(v)}`);
    default: {
      if (typeof v !== 'string') throw fail(type, id, f.name, 'type', `must be a string, got ${describe(v)}`);
      if (CONTROL_RE.test(v)) throw fail(type, id, f.name, 'type', 'contains a control character');
      if (LONE_SURROGATE_RE.test(v)) throw fail(type, id, f.name, 'type', 'contains half of a UTF-16 surrogate pair, which UTF-8 cannot hold; send the whole character');
      if (v.length > f.maxLength) throw fail(type, id, f.name, 'maxLength', `is longer than ${f.maxLength} characters`);
      if (f.kind === 'enum' && !f.values!.includes(v)) {
        throw fail(type, id, f.name, 'enum', `must be one of ${f.values!.join(', ')}, got ${describe(v)}`);
      }
      if (f.kind === 'date') {
        const m = DATE_RE.exec(v);
        const d = m ? new Date(`${v}T00:00:00Z`) : undefined;
        if (!m || !d || Number.isNaN(d.getTime()) || d.toISOString().slice(0, 10) !== v) {
          throw fail(type, id, f.name, 'type', `must be a date as YYYY-MM-DD, got ${describe(v)}`);
        }
      }
      if (f.kind === 'ref' && !isValidId(v)) throw fail(type, id, f.name, 'type', `must be an object id, got ${describe(v)}`);
      if (f.kind === 'string' && v === '') throw fail(type, id, f.name, 'type', 'must not be empty; remove the field instead');
      // an empty password would be stored as a hash like any other and then lock the person out: binds refuse empty passwords
      if (f.kind === 'password' && v === '') throw fail(type, id, f.name, 'type', 'must not be empty: an empty password can never be used to sign in');
      if (f.pattern && f.kind !== 'password' && !f.pattern.test(v)) throw fail(type, id, f.name, 'pattern', `value ${describe(v)} does not match ${f.pattern.source}`);
      return v;
    }
  }
}

/** The most values one multi-valued field may hold. */
export const MAX_VALUES = 1000;

/**
 * Checks the values a write supplies. `null` (remove the field) passes through;
 * the caller checks required fields on the merged result.
 */
export function checkFieldValues(
  type: TypeDef,
  id: string | undefined,
  input: Readonly<Record<string, unknown>>,
): Record<string, FieldValue | null> {
  const out: Record<string, FieldValue | null> = {};
  // loops, not entries/map/filter: this runs for every field of every write, and their arrays and closures were a tenth of a create's garbage
  for (const name of Object.keys(input)) {
    const raw = input[name];
    const f = type.fields.get(name);
    // A stored object may hold a field its type does not define (the schema dropped it, or two masters
    // created its id as two types and the other type's fields stayed): a write may remove it, not set it.
    if (raw === null || raw === undefined) {
      if (!f && id === undefined) throw fail(type, id, name, 'unknown-field', `is not a field of ${type.name}`);
      out[name] = null;
      continue;
    }
    if (!f) throw fail(type, id, name, 'unknown-field', `is not a field of ${type.name}`);
    if (f.multi) {
      const list = Array.isArray(raw) ? raw : [raw];
      if (list.length > MAX_VALUES) throw fail(type, id, name, 'maxItems', `has more than ${MAX_VALUES} values`);
      const values: Scalar[] = [];
      for (const v of list) values.push(scalar(type, id, f, v));
      out[name] = values.length === 0 ? null : values.length === 1 ? values : dedupFolded(f, values);
    } else {
      if (Array.isArray(raw)) {
        if (raw.length !== 1) throw fail(type, id, name, 'single', `takes one value, got ${raw.length}`);
        out[name] = scalar(type, id, f, raw[0]);
      } else {
        out[name] = scalar(type, id, f, raw);
      }
    }
  }
  return out;
}

/** The values without those equal to an earlier one once folded (the first spelling stays). */
function dedupFolded(f: FieldDef, values: Scalar[]): Scalar[] {
  const seen = new Set<string>();
  const out: Scalar[] = [];
  for (const v of values) {
    const k = foldValue(f, v);
    if (seen.has(k)) continue;
    seen.add(k);
    out.push(v);
  }
  return out;
}

export function checkRequired(type: TypeDef, id: string | undefined, fields: Readonly<Record<string, FieldValue>>): void {
  for (const f of type.fields.values()) {
    if (f.required && fields[f.name] === undefined) throw fail(type, id, f.name, 'required', 'is required');
  }
}

/** `withoutHolder`: the problem told without naming the object that holds a unique value (see asSeenBy). */
export function validationFailure(type: TypeDef, id: string | undefined, field: string, rule: string, problem: string, withoutHolder?: string): ValidationError {
  return fail(type, id, field, rule, problem, withoutHolder);
}

/** A unique value held by another object: the holder named to those who see everything (`withoutHolder` for the rest). */
export function uniqueTaken(type: TypeDef, id: string | undefined, field: string, value: string, holder: string): ValidationError {
  return fail(type, id, field, 'unique', `value "${value}" is already used by ${type.name} ${holder}`, `value "${value}" is already used by another ${type.name}`);
}

/**
 * Throws what a create under a chosen id is refused for: an id that is not
 * letters, digits, ".", "_" and "-", or one of the ids kept for replica
 * credentials (the replica registry names a credential's object by its name:
 * another type under such an id took that name from it).
 */
export function checkNewObjectId(type: string, id: string): void {
  if (!isValidId(id)) throw new ValidationError({ objectId: id, type, rule: 'id', message: `object id "${id}" may hold only letters, digits, ".", "_" and "-" (at most 128)` });
  if (type !== REPLICA_TYPE && id.startsWith(REPLICA_ID_PREFIX)) {
    throw new ValidationError({ objectId: id, type, rule: 'id', message: `object ids beginning with "${REPLICA_ID_PREFIX}" are kept for replica credentials; choose another id` });
  }
}

/** What a reference check needs of the object a reference names. */
export interface ReferenceTarget {
  readonly type: string;
  readonly deleted: boolean;
  readonly fields: Readonly<Record<string, unknown>>;
}

/**
 * Throws what a write is refused for when its field refers to `key`, the
 * object stored under that id being `target` (undefined: none): a missing or
 * deleted object, one of another type, or one whose fields break the
 * field's `where`.
 */
export function checkReference(def: TypeDef, id: string | undefined, field: FieldDef, key: string, target: ReferenceTarget | undefined): void {
  if (!target || target.deleted) throw fail(def, id, field.name, 'reference', `refers to ${target ? 'deleted' : 'missing'} object ${key}`);
  if (target.type !== field.to) throw fail(def, id, field.name, 'reference', `must refer to ${article(field.to!)}, but ${key} is ${article(target.type)}`);
  for (const [k, want] of Object.entries(field.where ?? {})) {
    if (String(target.fields[k]) !== want) {
      throw fail(def, id, field.name, 'reference', `must refer to ${article(field.to!)} whose ${k} is ${want}, but ${key} has ${k} ${String(target.fields[k] ?? '(none)')}`);
    }
  }
}

function article(noun: string): string {
  return `${/^[AEIOU]/i.test(noun) ? 'an' : 'a'} ${noun}`;
}

/** Whether stored fields equal checked new ones (null for absent), password fields aside: they are stored hashed and never shown. */
export function sameAsWritten(def: TypeDef, stored: Readonly<Record<string, FieldValue>>, next: Readonly<Record<string, FieldValue | null>>): boolean {
  const a = publicFields(def, stored);
  const b: Record<string, FieldValue> = {};
  for (const [k, v] of Object.entries(next)) if (v !== null && def.fields.get(k)?.kind !== 'password') b[k] = v;
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const k of keys) if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) return false;
  return true;
}

/** Fields safe to show outside the store: password hashes never leave it. */
export function publicFields(type: TypeDef | undefined, fields: Readonly<Record<string, FieldValue>>): Record<string, FieldValue> {
  const out: Record<string, FieldValue> = {};
  for (const [k, v] of Object.entries(fields)) {
    if (type?.fields.get(k)?.kind === 'password') continue;
    out[k] = v;
  }
  return out;
}
