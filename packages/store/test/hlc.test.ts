import t from 'tap';
import { HybridClock, isHlc, MAX_AHEAD_MS } from '../dist/hlc.js';

t.test('ticks order after what was observed, but a timestamp far in the future moves the clock a day ahead at most', (t) => {
  let wall = 1_800_000_000_000;
  const clock = new HybridClock(0, () => wall);
  const first = clock.tick();
  t.equal(first, wall * 1000);
  clock.observe(first + 5_000_000); // a peer 5 s ahead
  t.equal(clock.tick(), first + 5_000_001, 'a peer a little ahead is followed');
  clock.observe(2 ** 53 - 1); // a peer's forged or broken clock
  const after = clock.tick();
  t.equal(after, (wall + MAX_AHEAD_MS) * 1000 + 1, 'a day ahead of the wall clock, no further');
  t.ok(isHlc(after));
  for (let i = 0; i < 1000; i++) t.ok(clock.tick() > after + i, 'and monotonic from there');
  wall += 2 * MAX_AHEAD_MS;
  t.equal(clock.tick(), wall * 1000, 'the wall clock takes over once it passes');
  t.end();
});

t.test('isHlc takes safe integers from 0 up only', (t) => {
  for (const h of [0, 1, 2 ** 53 - 1]) t.ok(isHlc(h), String(h));
  for (const h of [-1, 2 ** 53, Infinity, NaN, 1.5, '1', null, undefined]) t.notOk(isHlc(h), String(h));
  t.end();
});
