/**
 * A generated dataset shaped like a software vendor's CRM: one vendor (us)
 * with staff, resellers with their admins, customers buying direct or through
 * a reseller, their contacts, hosts and licenses for releases of our
 * products. Deterministic for a seed, so tests and benchmarks can rely on it.
 */
export interface SampleObject {
  type: string;
  id: string;
  fields: Record<string, string | number | boolean | string[]>;
}

export interface SampleOptions {
  /** about how many Person objects to make */
  size: number;
  seed?: number;
  /** persons that get this password (the demo logins); others get none */
  password?: string;
}

/** mulberry32: small, fast and good enough to shape test data */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const GIVEN = ['Anna', 'Jürgen', 'Thandiwe', 'Mei', 'Carlos', 'Siobhán', 'Olumide', 'Priya', 'Lars', 'Yuki', 'Fatima', 'Pierre', 'Grace', 'Mateus', 'Ingrid', 'Kwame', 'Sofia', 'Hiroshi', 'Amelia', 'Dmitri', 'Zanele', 'Joon', 'Lucía', 'Oliver', 'Aisha', 'Björn', 'Chloé', 'Ravi', 'Nomvula', 'Ethan'];
const SURNAME = ['Smith', 'Müller', 'van der Merwe', 'Chen', 'García', "O'Brien", 'Okafor', 'Patel', 'Johansson', 'Tanaka', 'Haddad', 'Dubois', 'Nkosi', 'Silva', 'Larsen', 'Mensah', 'Rossi', 'Suzuki', 'MacLeod', 'Ivanova', 'Dlamini', 'Kim', 'Fernández', 'Brown', 'Khan', 'Eriksson', 'Lefèvre', 'Iyer', 'Zulu', 'Jones'];
const PLACES: [string, string, string, string, string][] = [
  // city, state, country, postcode pattern (# = digit), phone prefix
  ['Cape Town', 'Western Cape', 'ZA', '8###', '+27 21'],
  ['Johannesburg', 'Gauteng', 'ZA', '2###', '+27 11'],
  ['Munich', 'Bavaria', 'DE', '80###', '+49 89'],
  ['Hamburg', 'Hamburg', 'DE', '20###', '+49 40'],
  ['Boston', 'MA', 'US', '02###', '+1 617'],
  ['Austin', 'TX', 'US', '78###', '+1 512'],
  ['Sydney', 'NSW', 'AU', '2###', '+61 2'],
  ['Melbourne', 'VIC', 'AU', '3###', '+61 3'],
  ['Lyon', 'Auvergne-Rhône-Alpes', 'FR', '69###', '+33 4'],
  ['Tokyo', 'Tokyo', 'JP', '1##-####', '+81 3'],
];
const COMPANY_A = ['Blue', 'North', 'Silver', 'Rapid', 'Green', 'Atlas', 'Coastal', 'Summit', 'Pioneer', 'Harbour', 'Nova', 'Granite'];
const COMPANY_B = ['Logistics', 'Pharma', 'Foods', 'Mining', 'Bank', 'Insurance', 'Motors', 'Textiles', 'Energy', 'Health', 'Media', 'Retail'];
const SUFFIX = ['Ltd', 'GmbH', 'Inc.', 'Pty Ltd', 'SA', 'KK', 'AG', 'LLC'];
const TITLES = ['CIO', 'IT Manager', 'System Administrator', 'Purchasing', 'Developer', 'Head of Operations', 'CFO', 'Network Engineer'];
const PRODUCTS: [string, string[], string[]][] = [
  ['Meridian Office', ['server', 'client', 'docs'], ['crm', 'billing', 'reports']],
  ['Meridian Directory', ['server', 'ldap-proxy'], ['sync', 'audit']],
  ['Meridian Backup', ['agent', 'vault'], ['encryption', 'dedup', 'tape']],
  ['Meridian Mail', ['mta', 'webmail'], ['antispam', 'archive']],
  ['Meridian Insight', ['collector', 'dashboard'], ['alerts', 'forecast']],
];

const DEMO_ROLES = ['staff', 'reseller-admin', 'customer-contact'];

export function generateSample(opts: SampleOptions): SampleObject[] {
  const rnd = prng(opts.seed ?? 42);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const int = (lo: number, hi: number): number => lo + Math.floor(rnd() * (hi - lo + 1));
  const digits = (pattern: string): string => pattern.replace(/#/g, () => String(int(0, 9)));
  const pad = (n: number, w = 5): string => String(n).padStart(w, '0');
  const out: SampleObject[] = [];
  const usedMail = new Set<string>();
  let personN = 0;
  const loginRoles = new Set<string>();

  const org = (id: string, kind: string, extra: Record<string, string>): string => {
    const place = pick(PLACES);
    out.push({
      type: 'Organisation',
      id,
      fields: {
        name: extra['name'] ?? `${pick(COMPANY_A)} ${pick(COMPANY_B)} ${pick(SUFFIX)}`,
        kind,
        street: `${int(1, 299)} ${pick(['Main', 'Long', 'Church', 'Station', 'Harbour'])} Street`,
        l: place[0],
        st: place[1],
        c: place[2],
        postalCode: digits(place[3]),
        telephoneNumber: [`${place[4]} ${digits('### ####')}`],
        ...Object.fromEntries(Object.entries(extra).filter(([k]) => k !== 'name')),
      },
    });
    return id;
  };

  const person = (orgId: string, roles: string[], domain: string): void => {
    personN++;
    const given = pick(GIVEN);
    const sn = pick(SURNAME);
    const place = pick(PLACES);
    const local = `${given}.${sn}`.normalize('NFD').replace(/[^A-Za-z.]/g, '').toLowerCase();
    let mail = `${local}@${domain}`;
    for (let i = 2; usedMail.has(mail.toLowerCase()); i++) mail = `${local}${i}@${domain}`;
    usedMail.add(mail.toLowerCase());
    // Mixed case on purpose: LDAP and lookups must match case-insensitively.
    const shownMail = rnd() < 0.3 ? mail.replace(/^./, (c) => c.toUpperCase()) : mail;
    const fields: SampleObject['fields'] = {
      cn: `${given} ${sn}`,
      givenName: given,
      sn,
      mail: [shownMail],
      telephoneNumber: [`${place[4]} ${digits('### ####')}`],
      title: pick(TITLES),
      l: place[0],
      st: place[1],
      c: place[2],
      postalCode: digits(place[3]),
      organisation: orgId,
      roles,
      uid: `u${pad(personN, 6)}`,
    };
    if (rnd() < 0.4) fields['mobile'] = `${place[4].split(' ')[0]} ${digits('## ### ####')}`;
    // The first staff member, reseller admin and customer contact are the demo logins.
    const role = roles[0];
    if (opts.password && role && DEMO_ROLES.includes(role) && !loginRoles.has(role)) {
      loginRoles.add(role);
      fields['password'] = opts.password;
    }
    out.push({ type: 'Person', id: `per-${pad(personN, 6)}`, fields });
  };

  const size = Math.max(10, Math.floor(opts.size));
  const vendor = org('org-vendor', 'vendor', { name: 'Meridian Software Ltd', url: 'https://meridian.example' });
  const staff = Math.max(3, Math.round(size * 0.02));
  for (let i = 0; i < staff; i++) person(vendor, ['staff'], 'meridian.example');

  const releases: string[] = [];
  PRODUCTS.forEach(([name, components, modules], pi) => {
    const pid = `prd-${pad(pi + 1, 3)}`;
    out.push({ type: 'Product', id: pid, fields: { name, vendor, description: `${name}, sold worldwide` } });
    const n = int(2, 4);
    for (let r = 0; r < n; r++) {
      const rid = `rel-${pad(pi + 1, 3)}-${r + 1}`;
      releases.push(rid);
      out.push({
        type: 'Release',
        id: rid,
        fields: { product: pid, version: `${r + 1}.${int(0, 9)}.${int(0, 20)}`, released: `20${20 + r}-0${int(1, 9)}-1${int(0, 9)}`, components, modules },
      });
    }
  });

  const resellerCount = Math.max(2, Math.round(size / 250));
  const customerCount = Math.max(3, Math.round(size / 8));
  const resellers: string[] = [];
  for (let i = 1; i <= resellerCount; i++) {
    const id = org(`org-r${pad(i, 4)}`, 'reseller', {});
    resellers.push(id);
    person(id, ['reseller-admin'], `reseller${i}.example`);
    person(id, ['technical-contact'], `reseller${i}.example`);
  }
  let remaining = Math.max(0, size - personN);
  let hostN = 0;
  let licN = 0;
  for (let i = 1; i <= customerCount; i++) {
    const reseller = rnd() < 0.8 ? pick(resellers) : undefined;
    const id = org(`org-c${pad(i, 5)}`, 'customer', reseller ? { reseller } : {});
    const contacts = i === customerCount ? remaining : Math.min(remaining, int(1, Math.max(1, Math.round((2 * remaining) / (customerCount - i + 1)) - 1)));
    remaining -= contacts;
    for (let c = 0; c < contacts; c++) person(id, c === 0 ? ['customer-contact'] : rnd() < 0.3 ? ['technical-contact'] : [], `customer${i}.example`);
    const hosts: string[] = [];
    for (let h = int(1, 2); h > 0; h--) {
      const hid = `hst-${pad(++hostN, 6)}`;
      hosts.push(hid);
      out.push({ type: 'Host', id: hid, fields: { customer: id, hostname: `srv${int(1, 99)}.customer${i}.example`, hostId: digits('########'), os: pick(['Linux', 'Windows Server', 'FreeBSD']) } });
    }
    for (let l = int(1, 3); l > 0; l--) {
      const from = `202${int(3, 6)}-0${int(1, 9)}-0${int(1, 9)}`;
      const fields: SampleObject['fields'] = { customer: id, release: pick(releases), host: pick(hosts), validFrom: from, seats: int(1, 250) };
      if (rnd() < 0.7) fields['validUntil'] = `20${int(27, 30)}-12-31`;
      out.push({ type: 'License', id: `lic-${pad(++licN, 6)}`, fields });
    }
  }
  return out;
}
