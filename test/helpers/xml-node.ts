import type { Test } from 'tap';
import { pino, type Level } from 'pino';
import { MeridianNode, resolveConfig, type ConfigInput } from '@meridian/node';
import { logSink, type LogLine } from './node-process.js';
import { tempDir } from './tmp.js';

export const ADMIN_PW = 'xml-admin-pw';
export const PERSON_PW = 'person-pw-1';

/**
 * Starts a node in this process, stopped when the test ends. Its log lines
 * at `level` and above go to `logs`, if given.
 */
export async function startXmlNode(t: Test, flags: ConfigInput = {}, tuning: { writesGraceMs?: number; bindDelayMs?: number } = {}, logs: LogLine[] = [], level: Level = 'warn'): Promise<MeridianNode> {
  const config = resolveConfig({ flags: { dir: tempDir(t), httpPort: 0, adminPassword: ADMIN_PW, ...flags } });
  const node = await MeridianNode.start(config, pino({ level }, logSink(logs)), tuning);
  t.teardown(() => node.stop());
  return node;
}

export const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
export const ADMIN = basic('admin', ADMIN_PW);

export interface Reply {
  status: number;
  text: string;
  headers: Headers;
}

export async function call(node: MeridianNode, method: string, path: string, opts: { auth?: string | null; body?: string; headers?: Record<string, string> } = {}): Promise<Reply> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (opts.auth !== null) headers['authorization'] = opts.auth ?? ADMIN;
  if (opts.body !== undefined && headers['content-type'] === undefined) headers['content-type'] = 'application/xml';
  const res = await fetch(`${node.url}${path}`, { method, headers, body: opts.body });
  return { status: res.status, text: await res.text(), headers: res.headers };
}

/**
 * A small CRM: the vendor with a staff member; a reseller with its admin;
 * customer C1 (through the reseller) with a contact, a colleague, a host and
 * a license; customer C2 (direct) with a contact and a license.
 */
export async function seed(node: MeridianNode): Promise<void> {
  const s = node.store;
  const p = { principal: 'test' };
  await s.create('Organisation', { name: 'Vendor', kind: 'vendor' }, { ...p, id: 'org-vendor' });
  await s.create('Organisation', { name: 'Reseller R', kind: 'reseller' }, { ...p, id: 'org-r' });
  await s.create('Organisation', { name: 'Customer One', kind: 'customer', reseller: 'org-r', postalCode: '0049' }, { ...p, id: 'org-c1' });
  await s.create('Organisation', { name: 'Customer Two', kind: 'customer' }, { ...p, id: 'org-c2' });
  const person = (id: string, org: string, uid: string, roles: string[]): Promise<unknown> =>
    s.create('Person', { cn: `Person ${uid}`, sn: uid, uid, mail: [`${uid}@example.com`], organisation: org, roles, password: PERSON_PW, telephoneNumber: ['+27 021 555 0100'] }, { ...p, id });
  await person('per-staff', 'org-vendor', 'staff1', ['staff']);
  await person('per-radmin', 'org-r', 'radmin', ['reseller-admin']);
  await person('per-c1', 'org-c1', 'contact1', ['customer-contact']);
  await person('per-c1b', 'org-c1', 'colleague1', ['technical-contact']);
  await person('per-c2', 'org-c2', 'contact2', ['customer-contact']);
  await s.create('Product', { name: 'Office', vendor: 'org-vendor' }, { ...p, id: 'prd-office' });
  await s.create('Release', { product: 'prd-office', version: '1.0' }, { ...p, id: 'rel-office-1' });
  await s.create('Host', { customer: 'org-c1', hostname: 'db1.c1.example' }, { ...p, id: 'hst-c1' });
  await s.create('License', { customer: 'org-c1', release: 'rel-office-1', validFrom: '2026-01-01', seats: 10, host: 'hst-c1' }, { ...p, id: 'lic-c1' });
  await s.create('License', { customer: 'org-c2', release: 'rel-office-1', validFrom: '2026-01-01', seats: 5 }, { ...p, id: 'lic-c2' });
}

/** The ETag's version. */
export const etagOf = (r: Reply): string => (r.headers.get('etag') ?? '').replace(/"/g, '');

/** Ids of the objects in an XML answer, in order. */
export const idsIn = (text: string): string[] => [...text.matchAll(/<object type="[^"]+" id="([^"]+)"/g)].map((m) => m[1]!);

/** Values of one field in an XML object answer. */
export const fieldValues = (text: string, name: string): string[] =>
  [...text.matchAll(new RegExp(`<field name="${name}">([^<]*)</field>`, 'g'))].map((m) => m[1]!.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&#13;/g, '\r').replace(/&amp;/g, '&'));
