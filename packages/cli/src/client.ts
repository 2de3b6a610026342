/**
 * The CLI's HTTP client for a node's admin API. Every failure becomes a
 * CliError carrying one sentence for stderr.
 */
export class CliError extends Error {
  constructor(
    message: string,
    /** 1: the operation failed; 2: the command was used wrongly */
    readonly exitCode: 1 | 2 = 1,
  ) {
    super(message);
  }
}

export interface ClientOptions {
  node: string;
  user: string;
  password: string | undefined;
  /** ms to wait for an answer (for export and backup: for the answer to begin) */
  timeoutMs?: number | undefined;
}

/** Seconds the CLI waits for a node's answer unless told otherwise (--timeout). */
export const DEFAULT_TIMEOUT_SECONDS = 60;

/** --timeout / MERIDIAN_TIMEOUT as milliseconds. */
export function timeoutOption(value: string | undefined): number {
  if (value === undefined) return DEFAULT_TIMEOUT_SECONDS * 1000;
  const seconds = Number(value);
  // (at most 300: Node's fetch gives up on an answer that has not begun after 300 s whatever is asked)
  if (!/^\d+(\.\d+)?$/.test(value.trim()) || !(seconds > 0) || seconds > 300) throw new CliError(`--timeout must be a number of seconds above 0 and at most 300, got "${value}"`, 2);
  return seconds * 1000;
}

/**
 * A URL as typed, for an error sentence, with whatever stands before its last "@" left out (after the
 * scheme, if it has one): it may be a password, and one with "/", "?" or "#" in it is no URL at all.
 */
export function withoutCredentials(url: string): string {
  const at = url.lastIndexOf('@');
  if (at < 0) return url;
  const scheme = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.exec(url)?.[0] ?? '';
  return `${scheme}...${url.slice(at)}`;
}

export class AdminClient {
  private readonly base: URL;
  private readonly timeoutMs: number;

  constructor(private readonly opts: ClientOptions) {
    try {
      this.base = new URL(opts.node);
    } catch {
      throw new CliError(`--node must be a URL such as http://127.0.0.1:8080, got "${withoutCredentials(opts.node)}"`, 2);
    }
    if (this.base.protocol !== 'http:' && this.base.protocol !== 'https:') {
      throw new CliError(`--node must be an http:// or https:// URL, got "${withoutCredentials(opts.node)}"`, 2);
    }
    // (fetch refuses such a URL, and its error quoted the URL, password and all)
    if (this.base.username !== '' || this.base.password !== '') {
      throw new CliError(`--node must not hold a user or password (${this.base.origin} with user@ before the host); pass --user and --password or MERIDIAN_PASSWORD`, 2);
    }
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_SECONDS * 1000;
  }

  /**
   * A request whose answer is streamed by the caller (export, import). The
   * body may be a stream; an error answer becomes a CliError with the
   * node's sentence (from an XML <error> or a JSON error).
   */
  async raw(method: string, path: string, body?: string | AsyncIterable<Uint8Array>, headers: Record<string, string> = {}): Promise<Response> {
    // (Node's fetch streams an async iterable body; the DOM typings do not know that)
    // A streamed upload (an import) is answered once the node has applied all of it: no deadline then.
    const deadline = typeof body === 'object' ? undefined : this.deadline();
    let res: Response;
    try {
      res = await this.send(path, { method, headers: { ...headers }, body: body as BodyInit | undefined, duplex: 'half' } as RequestInit & { headers: Record<string, string> }, deadline);
    } finally {
      deadline?.clear();
    }
    if (!res.ok) {
      const text = await res.text();
      const xml = /<error[^>]*>([^<]*)<\/error>/.exec(text)?.[1];
      throw this.refused(res.status, xml ? unescapeXml(xml) : errorMessage(text));
    }
    return res;
  }

  /** `lists`: the fields of the answer that must be lists, or it is no Meridian node's (a view would fail on it with a TypeError) */
  async request<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}, lists: readonly string[] = []): Promise<{ status: number; body: T; headers: Headers }> {
    const h: Record<string, string> = { accept: 'application/json', ...headers };
    if (body !== undefined) h['content-type'] = 'application/json';
    const deadline = this.deadline();
    let text: string;
    try {
      const res = await this.send(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) }, deadline);
      try {
        text = await res.text();
      } catch {
        if (deadline.signal.aborted) throw this.late(method);
        throw new CliError(`the node at ${this.base.origin} closed the connection before its answer was complete${method === 'GET' ? '' : '; the change may or may not have been made'}`);
      }
      const answer = this.parsed<T>(res, text);
      const b = answer.body as unknown;
      const missing = lists.find((k) => typeof b !== 'object' || b === null || !Array.isArray((b as Record<string, unknown>)[k]));
      if (missing !== undefined) throw new CliError(`the node at ${this.base.origin} answered ${method} ${path.split('?')[0]} without the list "${missing}" a Meridian node sends; is it a Meridian node?`);
      return answer;
    } finally {
      deadline.clear();
    }
  }

  private parsed<T>(res: Response, text: string): { status: number; body: T; headers: Headers } {
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      throw new CliError(`the node at ${this.base.origin} answered ${res.status} with a body that is not JSON; is it a Meridian node?`);
    }
    if (!res.ok) throw this.refused(res.status, (parsed as { error?: { message?: string } } | undefined)?.error?.message);
    return { status: res.status, body: parsed as T, headers: res.headers };
  }

  /** An abort signal for the timeout, and its timer's clearing. */
  private deadline(): { signal: AbortSignal; clear: () => void } {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), this.timeoutMs);
    return { signal: ctl.signal, clear: () => clearTimeout(timer) };
  }

  private late(method: string): CliError {
    const seconds = Math.round(this.timeoutMs / 100) / 10;
    return new CliError(`the node at ${this.base.origin} did not answer within ${seconds} s${method === 'GET' ? '' : ', and the change may or may not have been made'}; if it is only busy, wait longer with --timeout SECONDS`);
  }

  /** One request with the credential, or a sentence on why the node could not be reached. */
  private async send(path: string, init: RequestInit & { headers: Record<string, string> }, deadline?: { signal: AbortSignal }): Promise<Response> {
    if (this.opts.password !== undefined) {
      init.headers['authorization'] = `Basic ${Buffer.from(`${this.opts.user}:${this.opts.password}`).toString('base64')}`;
    }
    if (deadline) init.signal = deadline.signal;
    try {
      return await fetch(new URL(path, this.base), init);
    } catch (e) {
      if (deadline?.signal.aborted) throw this.late(init.method ?? 'GET');
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      const why = cause?.code === 'ECONNREFUSED' ? 'connection refused' : (cause?.message ?? (e as Error).message);
      throw new CliError(`cannot reach the node at ${this.base.origin} (${why}); is "meridian serve" running there?`);
    }
  }

  private refused(status: number, message: string | undefined): CliError {
    const text = message ?? `the node answered HTTP ${status}`;
    return new CliError(status === 401 && this.opts.password === undefined ? `${text}; pass --password or set MERIDIAN_PASSWORD` : text);
  }
}

function errorMessage(text: string): string | undefined {
  try {
    return (JSON.parse(text) as { error?: { message?: string } }).error?.message;
  } catch {
    return undefined;
  }
}

export function unescapeXml(s: string): string {
  return s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&#13;/g, '\r').replace(/&amp;/g, '&');
}
