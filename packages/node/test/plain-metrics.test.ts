import t from 'tap';
import { Counter, Histogram, Registry } from 'prom-client';
import { PlainCounter, PlainHistogram } from '../dist/plain-metrics.js';

const BOUNDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

t.test('the plain counter and histogram write what prom-client writes for the same observations', async (t) => {
  const registry = new Registry();
  const pc = new Counter({ name: 'x_requests_total', help: 'Requests.', labelNames: ['surface', 'status'], registers: [registry] });
  const ph = new Histogram({ name: 'x_duration_seconds', help: 'Times.', labelNames: ['surface'], buckets: BOUNDS, registers: [registry] });
  const mine = new Registry();
  const counter = new PlainCounter('x_requests_total', 'Requests.', ['surface', 'status'], mine);
  const histogram = new PlainHistogram('x_duration_seconds', 'Times.', ['surface'], BOUNDS, mine);
  const surfaces = ['xml', 'admin', 'health'];
  let seed = 7;
  const random = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let i = 0; i < 5000; i++) {
    const surface = surfaces[Math.floor(random() * 3)]!;
    const status = random() < 0.9 ? '200' : '404';
    // (bounds themselves too: a value equal to one is in its bucket)
    const seconds = random() < 0.1 ? BOUNDS[Math.floor(random() * BOUNDS.length)]! : random() ** 4 * 4;
    pc.inc({ surface, status });
    counter.child(`${surface} ${status}`, () => [surface, status]).n++;
    ph.observe({ surface }, seconds);
    histogram.observe(histogram.child(surface, () => [surface]), seconds);
  }
  const lines = (text: string): string[] => text.split('\n').filter((l) => l !== '');
  const theirs = lines(await registry.metrics());
  const ours = lines(await mine.metrics());
  t.same(ours, theirs, 'line for line');
  const count = ours.find((l) => l.startsWith('x_duration_seconds_count{surface="xml"} '))!.split(' ')[1];
  t.ok(Number(count) > 1000 && ours.includes(`x_duration_seconds_bucket{le="+Inf",surface="xml"} ${count}`), '+Inf holds every observation');
});

t.test('label values and help text are escaped as the text format asks, by the registry that writes them', async (t) => {
  const registry = new Registry();
  const counter = new PlainCounter('x_total', 'One \\ two\nthree', ['v'], registry);
  counter.child('k', () => ['a"b\\c\nd']).n += 2;
  t.equal(await registry.metrics(), '# HELP x_total One \\\\ two\\nthree\n# TYPE x_total counter\nx_total{v="a\\"b\\\\c\\nd"} 2\n');
  // (unlike prom-client's own, which writes zeros for an unlabelled metric before any observation: every family here has labels)
  const none = new PlainHistogram('y_seconds', 'Y.', [], [1], new Registry());
  t.same(none.get().values, [], 'a histogram with no observations has no samples');
  none.observe(none.child('', () => []), 2);
  t.same(
    none.get().values.map((v) => [v.metricName, v.labels, v.value]),
    [['y_seconds_bucket', { le: '1' }, 0], ['y_seconds_bucket', { le: '+Inf' }, 1], ['y_seconds_sum', {}, 2], ['y_seconds_count', {}, 1]],
    'without labels: only le',
  );
});

t.test('a request is counted once: when its handler returns with the answer ended, or else at its finish, and never if it does not finish', async (t) => {
  const { EventEmitter } = await import('node:events');
  const { Metrics } = await import('../dist/metrics.js');
  const store = { subscribe: () => () => undefined, lastSeq: 0, objectCounts: () => ({}), openConflictCount: () => 0 };
  const metrics = new Metrics({ store: store as never, peers: () => [], replica: () => undefined });
  const answer = (ended: boolean, statusCode: number) => Object.assign(new EventEmitter(), { writableEnded: ended, statusCode });
  const count = async (status: number): Promise<number> =>
    Number(new RegExp(`meridian_http_requests_total\\{surface="xml",method="GET",status="${status}"\\} (\\d+)`).exec(await metrics.text())?.[1] ?? 0);
  const started = performance.now();
  const ended = answer(true, 200);
  metrics.answered('xml', 'GET', ended as never, started);
  t.equal(await count(200), 1, 'ended when the handler returned: counted at once');
  ended.emit('finish');
  t.equal(await count(200), 1, 'and not again at its finish');
  const streaming = answer(false, 206);
  metrics.answered('xml', 'GET', streaming as never, started);
  t.equal(await count(206), 0, 'still being written: not yet');
  streaming.writableEnded = true;
  streaming.emit('finish');
  streaming.emit('finish');
  t.equal(await count(206), 1, 'counted at its finish, once');
  const left = answer(false, 500);
  metrics.answered('xml', 'GET', left as never, started);
  left.emit('close');
  t.equal(await count(500), 0, 'an answer that never finishes (its client went away: closed, not finished) is not counted');
  t.match(await metrics.text(), /meridian_http_request_duration_seconds_count\{surface="xml"\} 2\n/, 'and timed as often');
  metrics.close();
});
