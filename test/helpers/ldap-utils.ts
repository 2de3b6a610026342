import { execFile } from 'node:child_process';

export interface LdapRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs one of Debian's ldap-utils (ldapsearch, ldapwhoami, ldappasswd,
 * ldapmodify, ldapcompare, ldapadd, ldapdelete, ldapmodrdn) without blocking
 * this process, which may be serving the directory itself.
 */
export function ldapTool(tool: string, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<LdapRun> {
  return new Promise((resolve) => {
    const p = execFile(tool, args, { env: { ...process.env, ...opts.env }, timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException & { code?: unknown }).code === 'number' ? ((err as unknown as { code: number }).code) : 1) : 0;
      resolve({ code, stdout, stderr });
    });
    if (opts.input !== undefined) p.stdin!.end(opts.input);
    else p.stdin!.end();
  });
}

/** Entries of an LDIF answer: DN and attributes (names as the server wrote them), long lines unfolded. */
export function parseLdif(text: string): { dn: string; attrs: Record<string, string[]> }[] {
  const out: { dn: string; attrs: Record<string, string[]> }[] = [];
  const unfolded = text.replace(/\n /g, '');
  for (const block of unfolded.split(/\n\n+/)) {
    const lines = block.split('\n').filter((l) => l && !l.startsWith('#'));
    const first = lines[0];
    if (!first?.startsWith('dn:')) continue;
    const value = (l: string): string => {
      const i = l.indexOf(':');
      return l[i + 1] === ':' ? Buffer.from(l.slice(i + 2).trim(), 'base64').toString('utf8') : l.slice(i + 1).trim();
    };
    const entry = { dn: value(first), attrs: {} as Record<string, string[]> };
    for (const l of lines.slice(1)) {
      const name = l.slice(0, l.indexOf(':'));
      if (name === 'control' || name === 'search' || name === 'result' || name === 'text') continue;
      (entry.attrs[name] ??= []).push(value(l));
    }
    out.push(entry);
  }
  return out;
}
