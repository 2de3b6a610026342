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
}

export class AdminClient {
  private readonly base: URL;

  constructor(private readonly opts: ClientOptions) {
    try {
      this.base = new URL(opts.node);
    } catch {
      throw new CliError(`--node must be a URL such as http://127.0.0.1:8080, got "${opts.node}"`, 2);
    }
    if (this.base.protocol !== 'http:' && this.base.protocol !== 'https:') {
      throw new CliError(`--node must be an http:// or https:// URL, got "${opts.node}"`, 2);
    }
  }

  /**
   * A request whose answer is streamed by the caller (export, import). The
   * body may be a stream; an error answer becomes a CliError with the
   * node's sentence (from an XML <error> or a JSON error).
   */
  async raw(method: string, path: string, body?: string | AsyncIterable<Uint8Array>, headers: Record<string, string> = {}): Promise<Response> {
    const h: Record<string, string> = { ...headers };
    if (this.opts.password !== undefined) {
      h['authorization'] = `Basic ${Buffer.from(`${this.opts.user}:${this.opts.password}`).toString('base64')}`;
    }
    let res: Response;
    try {
      // (Node's fetch streams an async iterable body; the DOM typings do not know that)
      res = await fetch(new URL(path, this.base), { method, headers: h, body: body as BodyInit | undefined, duplex: 'half' } as RequestInit);
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      const why = cause?.code === 'ECONNREFUSED' ? 'connection refused' : (cause?.message ?? (e as Error).message);
      throw new CliError(`cannot reach the node at ${this.base.origin} (${why}); is "meridian serve" running there?`);
    }
    if (!res.ok) {
      const text = await res.text();
      const xml = /<error[^>]*>([^<]*)<\/error>/.exec(text)?.[1];
      const json = (() => {
        try {
          return (JSON.parse(text) as { error?: { message?: string } }).error?.message;
        } catch {
          return undefined;
        }
      })();
      const message = xml ? unescapeXml(xml) : (json ?? `the node answered HTTP ${res.status}`);
      throw new CliError(res.status === 401 && this.opts.password === undefined ? `${message}; pass --password or set MERIDIAN_PASSWORD` : message);
    }
    return res;
  }

  async request<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: T; headers: Headers }> {
    const h: Record<string, string> = { accept: 'application/json', ...headers };
    if (this.opts.password !== undefined) {
      h['authorization'] = `Basic ${Buffer.from(`${this.opts.user}:${this.opts.password}`).toString('base64')}`;
    }
    if (body !== undefined) h['content-type'] = 'application/json';
    const url = new URL(path, this.base);
    let res: Response;
    try {
      res = await fetch(url, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      const why = cause?.code === 'ECONNREFUSED' ? 'connection refused' : (cause?.message ?? (e as Error).message);
      throw new CliError(`cannot reach the node at ${this.base.origin} (${why}); is "meridian serve" running there?`);
    }
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      throw new CliError(`the node at ${this.base.origin} answered ${res.status} with a body that is not JSON; is it a Meridian node?`);
    }
    if (!res.ok) {
      const err = (parsed as { error?: { message?: string } } | undefined)?.error;
      let message = err?.message ?? `the node answered HTTP ${res.status}`;
      if (res.status === 401 && this.opts.password === undefined) message += '; pass --password or set MERIDIAN_PASSWORD';
      throw new CliError(message);
    }
    return { status: res.status, body: parsed as T, headers: res.headers };
  }
}

export function unescapeXml(s: string): string {
  return s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&#13;/g, '\r').replace(/&amp;/g, '&');
}
