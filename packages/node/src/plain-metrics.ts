/**
 * A labelled counter and a labelled histogram for what is counted once per
 * change or request (HTTP and LDAP), kept in plain numbers and written in the
 * Prometheus text format only when scraped. prom-client validates and
 * hashes the labels on every call, even on a child it handed out; on a
 * cached XML GET that, with the 'finish' listener it was called from, was
 * about a sixth of the node's CPU per request (docs/benchmarks.md, "GET
 * and the request metrics").
 */

/** One label set's count. */
export interface CounterChild {
  n: number;
}

/** One label set's observations: per bucket (not cumulative), their sum and count. */
export interface HistogramChild {
  readonly inBucket: Float64Array;
  sum: number;
  count: number;
}

/** A metric family: one child per label set, made the first time the set is asked for. */
abstract class Family<C> {
  private readonly children = new Map<string, { values: readonly string[]; child: C }>();

  constructor(
    readonly name: string,
    private readonly help: string,
    protected readonly labelNames: readonly string[],
    private readonly type: 'counter' | 'histogram',
  ) {}

  /** One label set's child: `key` tells the sets apart, `values` gives the set the first time. */
  child(key: string, values: () => readonly string[]): C {
    let c = this.children.get(key);
    if (!c) this.children.set(key, (c = { values: values(), child: this.make() }));
    return c.child;
  }

  text(): string {
    const lines = [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`];
    for (const { values, child } of this.children.values()) this.samples(lines, values, child);
    return lines.join('\n');
  }

  protected abstract make(): C;
  protected abstract samples(lines: string[], values: readonly string[], child: C): void;
}

export class PlainCounter extends Family<CounterChild> {
  constructor(name: string, help: string, labelNames: readonly string[]) {
    super(name, help, labelNames, 'counter');
  }

  protected make(): CounterChild {
    return { n: 0 };
  }

  protected samples(lines: string[], values: readonly string[], child: CounterChild): void {
    lines.push(`${this.name}${labels(this.labelNames, values)} ${child.n}`);
  }
}

export class PlainHistogram extends Family<HistogramChild> {
  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    /** upper bounds, ascending; +Inf is added */
    private readonly bounds: readonly number[],
  ) {
    super(name, help, labelNames, 'histogram');
  }

  protected make(): HistogramChild {
    return { inBucket: new Float64Array(this.bounds.length + 1), sum: 0, count: 0 };
  }

  observe(child: HistogramChild, value: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && value > b[i]!) i++;
    child.inBucket[i]! += 1;
    child.sum += value;
    child.count += 1;
  }

  protected samples(lines: string[], values: readonly string[], child: HistogramChild): void {
    // (le first, as prom-client wrote it before)
    const le = ['le', ...this.labelNames];
    let cumulative = 0;
    for (let i = 0; i <= this.bounds.length; i++) {
      cumulative += child.inBucket[i]!;
      const bound = i < this.bounds.length ? String(this.bounds[i]) : '+Inf';
      lines.push(`${this.name}_bucket${labels(le, [bound, ...values])} ${cumulative}`);
    }
    lines.push(`${this.name}_sum${labels(this.labelNames, values)} ${child.sum}`);
    lines.push(`${this.name}_count${labels(this.labelNames, values)} ${child.count}`);
  }
}

function labels(names: readonly string[], values: readonly string[]): string {
  if (names.length === 0) return '';
  return `{${names.map((n, i) => `${n}="${escapeLabel(values[i] ?? '')}"`).join(',')}}`;
}

/** The text format's escapes: a label value's backslash, double quote and line feed. */
function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** A HELP line's: backslash and line feed. */
function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}
