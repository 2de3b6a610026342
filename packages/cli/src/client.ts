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
    // (Node's fetch streams an async iterable body; the DOM typings do not know that)
    const res = await this.send(path, { method, headers: { ...headers }, body: body as BodyInit | undefined, duplex: 'half' } as RequestInit & { headers: Record<string, string> });
    if (!res.ok) {
      const text = await res.text();
      const xml = /<error[^>]*>([^<]*)<\/error>/.exec(text)?.[1];
      throw this.refused(res.status, xml ? unescapeXml(xml) : errorMessage(text));
    }
    return res;
  }

  async request<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: T; headers: Headers }> {
    const h: Record<string, string> = { accept: 'application/json', ...headers };
    if (body !== undefined) h['content-type'] = 'application/json';
    const res = await this.send(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    let text: string;
    try {
      text = await res.text();
    } catch {
      throw new CliError(`the node at ${this.base.origin} closed the connection before its answer was complete${method === 'GET' ? '' : '; the change may or may not have been made'}`);
    }
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      throw new CliError(`the node at ${this.base.origin} answered ${res.status} with a body that is not JSON; is it a Meridian node?`);
    }
    if (!res.ok) throw this.refused(res.status, (parsed as { error?: { message?: string } } | undefined)?.error?.message);
    return { status: res.status, body: parsed as T, headers: res.headers };
  }

  /** One request with the credential, or a sentence on why the node could not be reached. */
  private async send(path: string, init: RequestInit & { headers: Record<string, string> }): Promise<Response> {
    if (this.opts.password !== undefined) {
      init.headers['authorization'] = `Basic ${Buffer.from(`${this.opts.user}:${this.opts.password}`).toString('base64')}`;
    }
    try {
      return await fetch(new URL(path, this.base), init);
    } catch (e) {
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
