import {
  checkChangeSize,
  checkFieldValues,
  checkNewObjectId,
  checkReference,
  checkRequired,
  foldValue,
  sameAsWritten,
  uniqueTaken,
  type FieldValue,
  type Schema,
  type Store,
  type TypeDef,
  type Writer,
  type WriteRequest,
} from '@meridian/store';
import { escapeAttr, escapeText, writeFields, xmlSafe, XML_DECLARATION, XmlError, type ObjectInput } from './format.js';
import { groupOf, parseHere, type ParsedPieces, type Piece } from './parse-pieces.js';
import type { PieceParser } from './piece-parser.js';
import { streamObjects } from './stream-objects.js';
import type { HttpAnswer } from './gateway.js';

/**
 * Types in an order where each comes after the types it refers to, so an
 * export can be imported into an empty node object by object (references
 * to the object's own type are handled by the exporter in two passes).
 */
export function exportOrder(schema: Schema): TypeDef[] {
  const out: TypeDef[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (t: TypeDef): void => {
    if (state.get(t.name) === 'done' || state.get(t.name) === 'visiting') return;
    state.set(t.name, 'visiting');
    for (const f of t.fields.values()) {
      const to = f.kind === 'ref' ? schema.types.get(f.to!) : undefined;
      if (to && to !== t) visit(to);
    }
    state.set(t.name, 'done');
    out.push(t);
  };
  for (const t of schema.types.values()) if (!t.system) visit(t);
  return out;
}

type Status = 'created' | 'updated' | 'unchanged' | 'rejected';

interface Result {
  line: number;
  type: string;
  id: string | undefined;
  status: Status;
  message?: string;
  field?: string | undefined;
}

export interface ImportOptions {
  store: Store;
  writer: Writer;
  body: AsyncIterable<Buffer>;
  dryRun: boolean;
  /** largest single object, bytes */
  maxObject: number;
  writeOptions: WriteRequest;
  mapError(e: unknown): HttpAnswer;
  /** parses the groups of a large document off the event loop (past the first LOCAL_GROUPS) */
  parser: PieceParser;
}

/** writes in flight at once: enough to fill group commits */
const WINDOW = 256;
/** objects parsed together (see parseGroup), and their most characters */
const GROUP = 32;
const GROUP_BYTES = 256 * 1024;
/** groups parsed here before the parser's worker is used: a small document needs no thread hand-off */
const LOCAL_GROUPS = 2;
/** groups parsed ahead of the one being written */
const PARSE_AHEAD = 4;
/** beyond this many results only the rejected ones are listed one by one */
const LIST_ALL = 10_000;
/** results listed in all: past it a rejection is counted, not listed (a report of millions would not fit in memory) */
const MAX_LISTED = 100_000;
/** objects whose reference was not there yet, tried again at the end: at most this many, of at most these bytes of values */
const MAX_DEFERRED = 10_000;
const MAX_DEFERRED_BYTES = 64 * 1024 * 1024;

/** An object as an earlier copy of it in a dry run's document would leave it. */
interface HeldCopy {
  type: string;
  fields: Record<string, FieldValue>;
}

/**
 * Applies a streamed `<objects>` document object by object through the
 * normal write path: an object with an id that exists is replaced by the
 * document's (fields left out are removed; passwords, which exports never
 * carry, are kept), one that does not is created with that id, and one
 * without an id is created with a new one. Up to WINDOW writes run at once
 * so they share fsyncs; a write waits for the writes of the objects it
 * refers to. An object rejected for a reference to an object not there yet
 * is tried again once the rest of the document is in. With `dryRun`
 * nothing is written and each object is checked against the schema and the
 * store as it stands (plus the objects earlier in the document).
 */
export async function runImport(o: ImportOptions): Promise<{ status: number; body: string }> {
  const results: Result[] = [];
  const counts: Record<Status, number> = { created: 0, updated: 0, unchanged: 0, rejected: 0 };
  const inFlight = new Map<string, Promise<void>>();
  const running = new Set<Promise<void>>();
  const deferred: Deferred[] = [];
  let unlisted = 0;
  let deferredBytes = 0;
  /** ids of which a copy is held back: a later copy of the id waits behind it, so copies apply in document order */
  const deferredIds = new Set<string>();
  /** dry run: what each id of the document holds after its last copy so far, standing in for the store */
  const dryHeld = new Map<string, HeldCopy>();
  const holdBack = (line: number, input: ObjectInput): boolean => {
    const bytes = valueBytes(input);
    if (deferred.length >= MAX_DEFERRED || deferredBytes + bytes > MAX_DEFERRED_BYTES) return false;
    deferred.push({ line, input });
    deferredBytes += bytes;
    if (input.id !== undefined) deferredIds.add(input.id);
    return true;
  };
  const record = (r: Result): void => {
    counts[r.status]++;
    if ((r.status === 'rejected' && results.length < MAX_LISTED) || results.length < LIST_ALL) results.push(r);
    else if (r.status === 'rejected') unlisted++;
  };

  const applyOne = async (line: number, input: ObjectInput, lastChance: boolean): Promise<void> => {
    const def = o.store.schema.types.get(input.type);
    if (!def || def.system) {
      record({ line, type: input.type, id: input.id, status: 'rejected', message: `unknown type ${input.type}` });
      return;
    }
    const fields = writeFields(def, input);
    if (!lastChance && input.id !== undefined && deferredIds.has(input.id)) {
      if (!holdBack(line, input)) record({ line, type: input.type, id: input.id, status: 'rejected', message: `an earlier copy of ${input.id} in this document is held back for a missing reference, and no more can be held back behind it` });
      return;
    }
    // Wait for the objects this one refers to, if they are being written: those in flight now, before this one
    // is (taken before the first await). Looked up one by one after awaits, a reference to itself waited for its
    // own write, and two objects referring to each other each waited for the other: the import never ended.
    const waits: Promise<void>[] = [];
    for (const f of def.fields.values()) {
      if (f.kind !== 'ref') continue;
      const v = fields[f.name];
      for (const ref of v === null || v === undefined ? [] : Array.isArray(v) ? v : [v]) {
        const w = inFlight.get(String(ref));
        if (w) waits.push(w);
      }
    }
    for (const w of waits) await w;
    try {
      // (read again although launchNext read the group ahead: a cache hit now, and right when an
      // earlier object of the document had the same id and was written since)
      const current = input.id === undefined ? undefined : await o.store.get(input.id);
      if (current && current.type !== input.type) throw new XmlError(409, `${input.id} is a ${current.type} here, not a ${input.type}`);
      if (current?.deleted) throw new XmlError(409, `${input.type} ${input.id} was deleted on this node; undelete it before importing it again`);
      if (o.dryRun) {
        // an earlier copy of the id in the document stands for the store's object, which the import would have made or changed
        const copy = input.id === undefined ? undefined : dryHeld.get(input.id);
        if (copy && copy.type !== input.type) throw new XmlError(409, `${input.id} is a ${copy.type} here, not a ${input.type}`);
        const verdict = await check(o.store, def, input.id, fields, copy?.fields ?? current?.fields, dryHeld);
        record({ line, type: input.type, id: input.id, status: verdict.status });
        if (input.id !== undefined) dryHeld.set(input.id, { type: input.type, fields: verdict.merged });
        return;
      }
      if (current) {
        const next = checkFieldValues(def, current.id, fields);
        if (unchanged(def, current.fields, next)) {
          record({ line, type: input.type, id: input.id, status: 'unchanged' });
          return;
        }
        await o.writer.replace(current.id, fields, o.writeOptions);
        record({ line, type: input.type, id: input.id, status: 'updated' });
      } else {
        const made = await o.writer.create(input.type, fields, { ...o.writeOptions, id: input.id });
        record({ line, type: input.type, id: made.id, status: 'created' });
      }
    } catch (e) {
      const a = o.mapError(e);
      // (on a replica the master judges references, and its refusal comes back with the rule 'master')
      const rule = (e as { rule?: string }).rule;
      const missingRef = (rule === 'reference' || rule === 'master') && /refers to missing object/.test(a.message);
      if (missingRef && !lastChance && holdBack(line, input)) return;
      record({ line, type: input.type, id: input.id, status: 'rejected', message: a.message, field: a.field });
    }
  };

  // (a slot freed wakes the one waiting launcher; Promise.race over the whole window at
  // every launch attached a handler to each running write, and showed up in profiles)
  let freed: (() => void) | undefined;
  const launch = async (line: number, input: ObjectInput, lastChance: boolean): Promise<void> => {
    while (running.size >= WINDOW) await new Promise<void>((r) => (freed = r));
    if (input.id !== undefined) await inFlight.get(input.id); // the same id twice: in document order
    const p = applyOne(line, input, lastChance).finally(() => {
      running.delete(p);
      if (input.id !== undefined && inFlight.get(input.id) === p) inFlight.delete(input.id);
      const wake = freed;
      freed = undefined;
      wake?.();
    });
    running.add(p);
    if (input.id !== undefined) inFlight.set(input.id, p);
  };

  let group: Piece[] = [];
  let groupBytes = 0;
  let groups = 0;
  // groups handed to the parser, oldest first; settled as values, so that those dropped after a malformed object reject nobody
  const parsing: Promise<{ ok: ParsedPieces } | { failed: unknown }>[] = [];
  const submit = (): void => {
    if (group.length === 0) return;
    const g = groupOf(group);
    group = [];
    groupBytes = 0;
    const parse = ++groups > LOCAL_GROUPS ? o.parser.parse(g) : parseHere(g);
    parsing.push(parse.then((ok) => ({ ok }), (failed: unknown) => ({ failed })));
  };
  /** Launches the oldest parsed group; the malformed object that ends it, if any, ends the import. */
  const launchNext = async (): Promise<XmlError | undefined> => {
    const done = await parsing.shift()!;
    if ('failed' in done) throw done.failed;
    const { parsed, bad } = done.ok;
    // The group's objects read in one go (reads issued together share a getMany), so each write
    // finds its object cached: one read per object, issued as its write started, cost 21 us of
    // main-thread time each in the thread-pool hand-off (profiled), a fifth of the import's CPU.
    await Promise.all(parsed.map(([, input]) => (input.id === undefined ? undefined : o.store.get(input.id).catch(() => undefined))));
    for (const [line, input] of parsed) await launch(line, input, false);
    return bad;
  };
  /** the first malformed object; nothing after it is applied */
  let bad: XmlError | undefined;
  /** where the document itself broke off (cut short, not UTF-8, an object too large) */
  let broken: XmlError | undefined;
  try {
    for await (const piece of streamObjects(o.body, o.maxObject)) {
      group.push(piece);
      groupBytes += piece.text.length;
      if (group.length >= GROUP || groupBytes >= GROUP_BYTES) {
        submit();
        while (parsing.length > PARSE_AHEAD && !bad) bad = await launchNext();
        if (bad) break;
      }
    }
  } catch (e) {
    if (!(e instanceof XmlError)) throw e;
    broken = e;
  }
  // the whole objects read before the document broke off are applied, as they are before a
  // malformed one (which, earlier in the document, is the error to report)
  submit();
  while (parsing.length && !bad) bad = await launchNext();
  parsing.length = 0;
  const malformed = bad ?? broken;
  await Promise.all(running);
  if (!malformed) {
    // in one round, each after the deferred objects it refers to, so that it waits for their writes
    for (const d of referencedFirst(o.store.schema, deferred.splice(0))) await launch(d.line, d.input, true);
    await Promise.all(running);
  }
  const applied = counts.created + counts.updated;
  if (malformed) {
    const done = o.dryRun ? '' : applied ? `; the ${applied} objects before it were applied` : '; nothing was applied';
    return {
      status: malformed.status,
      body: `${XML_DECLARATION}<error code="${malformed.status === 413 ? 'too-large' : 'bad-request'}">${escapeText(xmlSafe(malformed.message + done))}</error>\n`,
    };
  }
  results.sort((a, b) => a.line - b.line);
  const total = counts.created + counts.updated + counts.unchanged + counts.rejected;
  let body = `${XML_DECLARATION}<import dryRun="${o.dryRun}" objects="${total}" created="${counts.created}" updated="${counts.updated}" unchanged="${counts.unchanged}" rejected="${counts.rejected}"${total > LIST_ALL ? ' listed="rejected"' : ''}${unlisted ? ` unlisted="${unlisted}"` : ''}>\n`;
  for (const r of results) {
    // (type, id and messages may echo what the document held, characters XML does not allow included)
    const attrs = `line="${r.line}" type="${escapeAttr(xmlSafe(r.type))}"${r.id !== undefined ? ` id="${escapeAttr(xmlSafe(r.id))}"` : ''} status="${r.status}"${r.field ? ` field="${escapeAttr(xmlSafe(r.field))}"` : ''}`;
    body += r.message ? `  <result ${attrs}>${escapeText(xmlSafe(r.message))}</result>\n` : `  <result ${attrs}/>\n`;
  }
  body += '</import>\n';
  return { status: 200, body };
}

/** About what an object held back keeps in memory: its values' characters. */
function valueBytes(input: ObjectInput): number {
  let n = 0;
  for (const v of Object.values(input.fields)) for (const x of Array.isArray(v) ? v : [v]) n += x.length + 16;
  return n;
}

interface Deferred {
  line: number;
  input: ObjectInput;
}

/**
 * Deferred objects in an order where each comes after those it refers to
 * and after earlier copies of its own id (document order otherwise), so
 * that a chain of references (a reseller's reseller's reseller, in any
 * order in the document) is made link by link in one round. Objects in a
 * cycle of references stay in document order: none of them can be made.
 */
function referencedFirst(schema: Schema, items: Deferred[]): Deferred[] {
  // Copies of one id in document order, each after the one before it; an object that refers to the id
  // comes after its last copy, and so after them all. (Each copy listed every earlier one, and each
  // referrer every copy: 100,000 held-back copies of one id were five billion edges.)
  const byId = new Map<string, Deferred[]>();
  for (const d of items) {
    if (d.input.id === undefined) continue;
    const copies = byId.get(d.input.id);
    if (copies) copies.push(d);
    else byId.set(d.input.id, [d]);
  }
  const previous = new Map<Deferred, Deferred>();
  // (items come in document order, as they were held back: so does each id's list)
  for (const copies of byId.values()) {
    for (let i = 1; i < copies.length; i++) previous.set(copies[i]!, copies[i - 1]!);
  }
  const before = (d: Deferred): Deferred[] => {
    const out: Deferred[] = [];
    const prior = previous.get(d);
    if (prior) out.push(prior);
    const def = schema.types.get(d.input.type);
    if (!def) return out;
    for (const f of def.fields.values()) {
      if (f.kind !== 'ref') continue;
      const v = d.input.fields[f.name];
      for (const ref of v === undefined ? [] : Array.isArray(v) ? v : [v]) {
        const copies = byId.get(ref);
        if (copies) out.push(copies[copies.length - 1]!);
      }
    }
    return out;
  };
  const order: Deferred[] = [];
  const visited = new Set<Deferred>();
  // depth first, without recursion: a chain may be as long as MAX_DEFERRED
  for (const root of items) {
    if (visited.has(root)) continue;
    visited.add(root);
    const stack: { d: Deferred; next: Deferred[]; i: number }[] = [{ d: root, next: before(root), i: 0 }];
    while (stack.length) {
      const top = stack[stack.length - 1]!;
      const n = top.next[top.i++];
      if (n === undefined) {
        stack.pop();
        order.push(top.d);
      } else if (!visited.has(n)) {
        visited.add(n);
        stack.push({ d: n, next: before(n), i: 0 });
      }
    }
  }
  return order;
}

/**
 * A dry run's verdict: what the write would do, and the fields the object
 * would then hold; or throws what it would be refused for: the store's
 * rules for new ids, the schema's rules, references (to objects stored here
 * or earlier in the document) and unique values held by other objects.
 */
async function check(
  store: Store,
  def: TypeDef,
  id: string | undefined,
  fields: Record<string, unknown>,
  current: Readonly<Record<string, FieldValue>> | undefined,
  earlier: ReadonlyMap<string, HeldCopy>,
): Promise<{ status: Status; merged: Record<string, FieldValue> }> {
  if (id !== undefined && !current) checkNewObjectId(def.name, id);
  // (named as the store names it: a create is "new <type>", whatever its id)
  const shown = current ? id : undefined;
  const next = checkFieldValues(def, shown, fields);
  const merged: Record<string, FieldValue> = {};
  for (const [k, v] of Object.entries(next)) if (v !== null) merged[k] = v;
  // a password the copy leaves out is kept, as the import's replace keeps it (exports never carry one)
  for (const f of def.fields.values()) if (f.kind === 'password' && current?.[f.name] !== undefined && merged[f.name] === undefined) merged[f.name] = current[f.name]!;
  checkRequired(def, shown, merged);
  checkChangeSize(def, shown, current, merged, Object.keys(next));
  for (const f of def.fields.values()) {
    const v = merged[f.name];
    if (v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) {
      if (f.kind === 'ref') {
        // (an object earlier in the document is judged as the import would have left it: its type and fields too)
        const copy = earlier.get(String(one));
        checkReference(def, shown, f, String(one), copy ? { type: copy.type, deleted: false, fields: copy.fields } : await store.get(String(one)));
      } else if (f.unique) {
        const owner = (await store.lookup(def.name, f.name, String(one))).items[0];
        if (owner && owner.id !== id) {
          const value = String(foldValue(f, one));
          throw uniqueTaken(def, shown, f.name, value, owner.id);
        }
      }
    }
  }
  return { status: current && unchanged(def, current, next) ? 'unchanged' : current ? 'updated' : 'created', merged };
}

/**
 * Whether a document's object leaves the stored one as it is. sameAsWritten
 * leaves passwords out (stored hashed, never shown), so a document that
 * only sets them (persons exported, which carry none, imported again with
 * their hashes) was reported unchanged and nothing was stored. A password
 * left out keeps its stored value, as a replace does; one given in plain
 * text is always a change, since the hash it would be stored as is only
 * known once it is made.
 */
function unchanged(def: TypeDef, stored: Readonly<Record<string, FieldValue>>, next: Readonly<Record<string, FieldValue | null>>): boolean {
  for (const [k, v] of Object.entries(next)) if (v !== null && def.fields.get(k)?.kind === 'password' && v !== stored[k]) return false;
  return sameAsWritten(def, stored, next);
}
