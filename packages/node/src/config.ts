import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { isValidId, MeridianError, yamlProblem } from '@meridian/store';
import { parseReplicaCredential } from '@meridian/sync';
import { baseDnProblem } from '@meridian/ldap';

/**
 * A node's settings. Each can come from a command-line flag, an environment
 * variable or a config file; flags win over the environment, which wins over
 * the file, which wins over the defaults.
 */
/**
 * A setting `serve` cannot use, found only when it is used: a schema or TLS
 * file that cannot be read or is not what it should be. A usage error, as
 * resolveConfig's are (the CLI exits 2), unlike a failure to run.
 */
export class SettingError extends MeridianError {
  constructor(message: string) {
    super('bad-request', message);
    this.name = 'SettingError';
  }
}

export interface NodeConfig {
  dir: string;
  nodeId: string | undefined;
  host: string;
  httpPort: number;
  schema: string;
  adminPassword: string | undefined;
  /** largest request body the HTTP server reads, in bytes */
  maxBody: number;
  /** object cache budget, in bytes */
  cacheBytes: number;
  /** load the sample dataset on first start */
  sample: boolean;
  sampleSize: number;
  /** ws:// or wss:// URLs of peer masters */
  peers: string[];
  clusterSecret: string | undefined;
  clusterId: string;
  /** ms between heartbeats on replication links */
  heartbeat: number;
  /** ms without a heartbeat after which a link is dead */
  linkTimeout: number;
  /** PEM certificate and key files: serve HTTPS (and wss:// on /sync) */
  tlsCert: string | undefined;
  tlsKey: string | undefined;
  /** PEM CA file trusted when dialing wss:// peers */
  tlsCa: string | undefined;
  /** changes feed entries to keep (0: keep all); peers further behind catch up by anti-entropy */
  feedRetention: number;
  /** master: read-write, replicates with its peers; replica: reads locally, writes through a master */
  role: 'master' | 'replica';
  /** replica: ws:// or wss:// URLs of its masters, tried in order */
  masters: string[];
  /** replica: its credential, `name:serial:key`, from `meridian replica add` on a master */
  replicaCredential: string | undefined;
  /** replica: ms a forwarded write may wait for its master's answer and for the change to come back */
  writeTimeout: number;
  /** /readyz: ready while no peer is more than this many changes ahead of this node */
  readyLag: number;
  /** ms an HTTP connection may go without a byte read or written before it is closed (a client that stopped reading a stream) */
  idleTimeout: number;
  /** LDAP port (0: no plain LDAP) */
  ldapPort: number;
  /** LDAPS port, with --tls-cert and --tls-key (0: no LDAPS) */
  ldapsPort: number;
  /** the LDAP directory's base DN */
  baseDn: string;
  /** anonymous LDAP clients: none (only the root DSE and cn=Subschema) or read (everything, a public address book) */
  ldapAnonymous: 'none' | 'read';
  /** most entries one LDAP search returns to anyone but the admin */
  ldapSizeLimit: number;
  /** most seconds one LDAP search runs for anyone but the admin */
  ldapTimeLimit: number;
}

export type ConfigInput = { [K in keyof NodeConfig]?: NodeConfig[K] | string };

/** Settings that only make sense together, checked once all sources are merged. */
function checkCombination(c: NodeConfig): void {
  if (c.role === 'replica') {
    if (c.masters.length === 0) throw new MeridianError('bad-request', '--role replica needs --masters: the ws:// URLs of the masters it replicates from');
    if (!c.replicaCredential) throw new MeridianError('bad-request', '--role replica needs --replica-credential (or MERIDIAN_REPLICA_CREDENTIAL), issued by "meridian replica add NAME" on a master');
    if (!parseReplicaCredential(c.replicaCredential)) throw new MeridianError('bad-request', '--replica-credential must be name:serial:key exactly as "meridian replica add" printed it');
    if (c.clusterSecret) throw new MeridianError('bad-request', 'a replica must not hold the cluster secret (a laptop can be stolen); it authenticates with --replica-credential');
    if (c.peers.length > 0) throw new MeridianError('bad-request', 'a replica has --masters, not --peers');
    if (c.sample) throw new MeridianError('bad-request', '--sample is for masters; a replica clones its data from its master');
  } else {
    if (c.masters.length > 0) throw new MeridianError('bad-request', '--masters is for --role replica; masters list each other with --peers');
    if (c.replicaCredential) throw new MeridianError('bad-request', '--replica-credential is for --role replica; masters authenticate with --cluster-secret');
  }
  // (checked here, not when the LDAP gateway is built: by then the store was open, peers were dialed, and the
  // error was "unexpected", exit 1; and only with LDAP on, as before: a placeholder does no harm without it)
  const dnProblem = c.ldapPort > 0 || c.ldapsPort > 0 ? baseDnProblem(c.baseDn) : undefined;
  if (dnProblem) throw new MeridianError('bad-request', `--base-dn (MERIDIAN_BASE_DN) must be a base DN: ${dnProblem}`);
  if (c.peers.length > 0 && !c.clusterSecret) {
    throw new MeridianError('bad-request', '--peers needs --cluster-secret (or MERIDIAN_CLUSTER_SECRET): masters authenticate each other with it');
  }
  // (before the store opens: a node id it refuses left an empty data dir behind)
  if (c.nodeId !== undefined && !isValidId(c.nodeId)) {
    throw new MeridianError('bad-request', '--node-id may hold only letters, digits, ".", "_" and "-" (at most 128)');
  }
  if (!isValidId(c.clusterId)) {
    throw new MeridianError('bad-request', '--cluster-id may hold only letters, digits, ".", "_" and "-" (at most 128)');
  }
  if (c.clusterSecret !== undefined && c.clusterSecret.length < 16) {
    throw new MeridianError('bad-request', '--cluster-secret must be at least 16 characters');
  }
  if (c.linkTimeout <= c.heartbeat) throw new MeridianError('bad-request', '--link-timeout must be longer than --heartbeat');
  if ((c.tlsCert === undefined) !== (c.tlsKey === undefined)) throw new MeridianError('bad-request', '--tls-cert and --tls-key go together');
  if (c.ldapsPort > 0 && !c.tlsCert) throw new MeridianError('bad-request', '--ldaps-port needs --tls-cert and --tls-key: LDAPS serves that certificate');
  for (const k of ['ldapPort', 'ldapsPort'] as const) {
    if (c[k] > 65535) throw new MeridianError('bad-request', `--${kebab(k)} must be a port number (0-65535), got ${c[k]}`);
  }
}

export const DEFAULT_SCHEMA = fileURLToPath(new URL('../schema/crm.yaml', import.meta.url));

const DEFAULTS: NodeConfig = {
  dir: './data',
  nodeId: undefined,
  host: '127.0.0.1',
  httpPort: 8080,
  schema: DEFAULT_SCHEMA,
  adminPassword: undefined,
  maxBody: 1024 * 1024,
  cacheBytes: 64 * 1024 * 1024,
  sample: false,
  sampleSize: 1000,
  peers: [],
  clusterSecret: undefined,
  clusterId: 'meridian',
  heartbeat: 2000,
  linkTimeout: 10_000,
  tlsCert: undefined,
  tlsKey: undefined,
  tlsCa: undefined,
  feedRetention: 0,
  role: 'master',
  masters: [],
  replicaCredential: undefined,
  writeTimeout: 30_000,
  readyLag: 100,
  idleTimeout: 300_000,
  ldapPort: 0,
  ldapsPort: 0,
  baseDn: 'dc=example,dc=com',
  ldapAnonymous: 'none',
  ldapSizeLimit: 500,
  ldapTimeLimit: 60,
};

const ENV: Record<keyof NodeConfig, string> = {
  dir: 'MERIDIAN_DIR',
  nodeId: 'MERIDIAN_NODE_ID',
  host: 'MERIDIAN_HOST',
  httpPort: 'MERIDIAN_HTTP_PORT',
  schema: 'MERIDIAN_SCHEMA',
  adminPassword: 'MERIDIAN_ADMIN_PASSWORD',
  maxBody: 'MERIDIAN_MAX_BODY',
  cacheBytes: 'MERIDIAN_CACHE_BYTES',
  sample: 'MERIDIAN_SAMPLE',
  sampleSize: 'MERIDIAN_SAMPLE_SIZE',
  peers: 'MERIDIAN_PEERS',
  clusterSecret: 'MERIDIAN_CLUSTER_SECRET',
  clusterId: 'MERIDIAN_CLUSTER_ID',
  heartbeat: 'MERIDIAN_HEARTBEAT',
  linkTimeout: 'MERIDIAN_LINK_TIMEOUT',
  tlsCert: 'MERIDIAN_TLS_CERT',
  tlsKey: 'MERIDIAN_TLS_KEY',
  tlsCa: 'MERIDIAN_TLS_CA',
  feedRetention: 'MERIDIAN_FEED_RETENTION',
  role: 'MERIDIAN_ROLE',
  masters: 'MERIDIAN_MASTERS',
  replicaCredential: 'MERIDIAN_REPLICA_CREDENTIAL',
  writeTimeout: 'MERIDIAN_WRITE_TIMEOUT',
  readyLag: 'MERIDIAN_READY_LAG',
  idleTimeout: 'MERIDIAN_IDLE_TIMEOUT',
  ldapPort: 'MERIDIAN_LDAP_PORT',
  ldapsPort: 'MERIDIAN_LDAPS_PORT',
  baseDn: 'MERIDIAN_BASE_DN',
  ldapAnonymous: 'MERIDIAN_LDAP_ANONYMOUS',
  ldapSizeLimit: 'MERIDIAN_LDAP_SIZE_LIMIT',
  ldapTimeLimit: 'MERIDIAN_LDAP_TIME_LIMIT',
};

const NUMERIC = new Set<keyof NodeConfig>(['httpPort', 'maxBody', 'cacheBytes', 'sampleSize', 'heartbeat', 'linkTimeout', 'feedRetention', 'writeTimeout', 'readyLag', 'idleTimeout', 'ldapPort', 'ldapsPort', 'ldapSizeLimit', 'ldapTimeLimit']);

/**
 * Settings where 0 (or a value that small) would pass as a number but not
 * work: a heartbeat every millisecond on every link, every forwarded write
 * timed out at once, every body refused, every search cut at its first entry.
 */
const AT_LEAST: Partial<Record<keyof NodeConfig, number>> = { heartbeat: 50, maxBody: 1, writeTimeout: 100, idleTimeout: 1000, ldapSizeLimit: 1, ldapTimeLimit: 1 };

/** The longest a timer can wait (Node runs a longer one after 1 ms), in each setting's unit; port numbers; the largest sample a heap holds. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const AT_MOST: Partial<Record<keyof NodeConfig, number>> = {
  heartbeat: MAX_TIMER_MS,
  linkTimeout: MAX_TIMER_MS,
  writeTimeout: MAX_TIMER_MS,
  idleTimeout: MAX_TIMER_MS,
  httpPort: 65535,
  ldapPort: 65535,
  // the sample is generated in memory before it is written: about 900 bytes of heap a person
  sampleSize: 1_000_000,
  ldapsPort: 65535,
};

function configError(source: string, key: string, problem: string): MeridianError {
  return new MeridianError('bad-request', `${source}: ${key} ${problem}`);
}

function coerce(source: string, key: keyof NodeConfig, raw: unknown): NodeConfig[keyof NodeConfig] {
  if (NUMERIC.has(key)) {
    const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\d+$/.test(raw) ? Number(raw) : NaN;
    if (!Number.isSafeInteger(n) || n < 0) throw configError(source, key, `must be a whole number, got ${JSON.stringify(raw)}`);
    const least = AT_LEAST[key];
    if (least !== undefined && n < least) throw configError(source, key, `must be at least ${least}, got ${n}`);
    const most = AT_MOST[key];
    if (most !== undefined && n > most) throw configError(source, key, most === 65535 ? `must be a port number (0-65535), got ${n}` : `must be at most ${most}, got ${n}`);
    return n;
  }
  if (key === 'sample') {
    if (typeof raw === 'boolean') return raw;
    if (raw === 'true' || raw === '1') return true;
    if (raw === 'false' || raw === '0' || raw === '') return false;
    throw configError(source, key, `must be true or false, got ${JSON.stringify(raw)}`);
  }
  if (key === 'role') {
    if (raw === 'master' || raw === 'replica') return raw;
    throw configError(source, key, `must be master or replica, got ${JSON.stringify(raw)}`);
  }
  if (key === 'ldapAnonymous') {
    if (raw === 'none' || raw === 'read') return raw;
    throw configError(source, key, `must be none or read, got ${JSON.stringify(raw)}`);
  }
  if (key === 'peers' || key === 'masters') {
    const list = Array.isArray(raw) ? raw.map(String) : typeof raw === 'string' ? raw.split(',') : undefined;
    if (!list) throw configError(source, key, 'must be a list of ws:// or wss:// URLs');
    const urls = list.map((u) => u.trim()).filter(Boolean);
    for (const u of urls) {
      let ok = false;
      try {
        ok = ['ws:', 'wss:'].includes(new URL(u).protocol);
      } catch {
        ok = false;
      }
      if (!ok) throw configError(source, key, `must be ws:// or wss:// URLs, got "${u}"`);
    }
    return urls;
  }
  // (YAML reads 123456 or true unquoted as a number or boolean: turned back into text it may not be what was typed, 0123 or 1e3)
  if (typeof raw === 'number' || typeof raw === 'boolean') throw configError(source, key, `must be text, and YAML read ${String(raw)} as a ${typeof raw}; put the value in quotes`);
  if (typeof raw !== 'string' || raw === '') throw configError(source, key, `must be a non-empty string`);
  return raw;
}

export function readConfigFile(path: string): ConfigInput {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new MeridianError('bad-request', `cannot read config file ${path}: ${yamlProblem(e)}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new MeridianError('bad-request', `config file ${path} must be a mapping of settings`);
  const out: ConfigInput = {};
  for (const [k, v] of Object.entries(doc as Record<string, unknown>)) {
    if (!(k in DEFAULTS)) throw new MeridianError('bad-request', `config file ${path}: unknown setting "${k}"; known are ${Object.keys(DEFAULTS).join(', ')}`);
    (out as Record<string, unknown>)[k] = v;
  }
  return out;
}

/** Merges the sources: flags over environment over config file over defaults. */
export function resolveConfig(opts: { flags?: ConfigInput; env?: NodeJS.ProcessEnv; file?: string }): NodeConfig {
  const fromFile = opts.file ? readConfigFile(opts.file) : {};
  const env = opts.env ?? {};
  const out: Record<string, unknown> = { ...DEFAULTS };
  for (const key of Object.keys(DEFAULTS) as (keyof NodeConfig)[]) {
    const flag = opts.flags?.[key];
    const fromEnv = env[ENV[key]];
    if (flag !== undefined) out[key] = coerce(`--${kebab(key)}`, key, flag);
    else if (fromEnv !== undefined && fromEnv !== '') out[key] = coerce(ENV[key], key, fromEnv);
    else if (fromFile[key] !== undefined) out[key] = coerce(`config file ${opts.file}`, key, fromFile[key]);
  }
  const config = out as unknown as NodeConfig;
  checkCombination(config);
  return config;
}

export function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}
