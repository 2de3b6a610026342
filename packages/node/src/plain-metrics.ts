import type { Metric, Registry } from 'prom-client';

/**
 * A labelled counter and a labelled histogram for what is counted once per
 * change or request (HTTP and LDAP), kept in plain numbers and written in the
 * Prometheus text format by the registry only when scraped. prom-client validates and
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

/** One sample as prom-client's registry writes it (a custom metric's `get()` gives these). */
interface Sample {
  metricName?: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * A metric family: one child per label set, made the first time the set is
 * asked for. It counts in plain numbers and is registered in the node's
 * prom-client registry as a custom metric (`get()`), so that the registry
 * writes it, in whatever format it writes the others.
 */
abstract class Family<C> {
  private readonly children = new Map<string, { labels: Record<string, string>; child: C }>();
  /** for the registry: how several processes' values would be combined */
  readonly aggregator = 'sum';

  constructor(
    readonly name: string,
    readonly help: string,
    protected readonly labelNames: readonly string[],
    readonly type: 'counter' | 'histogram',
    registry: Registry,
  ) {
    registry.registerMetric(this as unknown as Metric);
  }

  /** One label set's child: `key` tells the sets apart, `values` gives the set the first time. */
  child(key: string, values: () => readonly string[]): C {
    let c = this.children.get(key);
    if (!c) {
      const v = values();
      this.children.set(key, (c = { labels: Object.fromEntries(this.labelNames.map((n, i) => [n, v[i] ?? ''])), child: this.make() }));
    }
    return c.child;
  }

  /** What the registry writes, at a scrape. */
  get(): { name: string; help: string; type: string; aggregator: string; values: Sample[] } {
    const values: Sample[] = [];
    for (const { labels, child } of this.children.values()) this.samples(values, labels, child);
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  protected abstract make(): C;
  protected abstract samples(out: Sample[], labels: Record<string, string>, child: C): void;
}

export class PlainCounter extends Family<CounterChild> {
  constructor(name: string, help: string, labelNames: readonly string[], registry: Registry) {
    super(name, help, labelNames, 'counter', registry);
  }

  protected make(): CounterChild {
    return { n: 0 };
  }

  protected samples(out: Sample[], labels: Record<string, string>, child: CounterChild): void {
    out.push({ labels, value: child.n });
  }
}

export class PlainHistogram extends Family<HistogramChild> {
  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    /** upper bounds, ascending; +Inf is added */
    private readonly bounds: readonly number[],
    registry: Registry,
  ) {
    super(name, help, labelNames, 'histogram', registry);
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

  protected samples(out: Sample[], labels: Record<string, string>, child: HistogramChild): void {
    let cumulative = 0;
    for (let i = 0; i <= this.bounds.length; i++) {
      cumulative += child.inBucket[i]!;
      // (le first, as prom-client's own histogram puts it)
      out.push({ metricName: `${this.name}_bucket`, labels: { le: i < this.bounds.length ? String(this.bounds[i]) : '+Inf', ...labels }, value: cumulative });
    }
    out.push({ metricName: `${this.name}_sum`, labels, value: child.sum });
    out.push({ metricName: `${this.name}_count`, labels, value: child.count });
  }
}
