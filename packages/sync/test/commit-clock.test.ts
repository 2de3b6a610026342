/**
 * The commit clock behind `peerBehindSeconds`: since when a peer holding
 * our feed up to some position has lacked a change, to within a second,
 * in bounded memory.
 */
import t from 'tap';
import { CommitClock } from '../dist/index.js';

t.test('the oldest change a peer lacks, to within the second it was committed in', async (t) => {
  const c = new CommitClock(1_000);
  t.equal(c.missingSince(0, 0), undefined, 'nothing committed: nobody lacks anything');
  t.ok(c.note(1, 10_000), 'seq 1 at 10 s starts a mark');
  t.notOk(c.note(4, 10_500), 'seq 4 in the same second does not');
  t.ok(c.note(9, 12_000));
  t.equal(c.missingSince(0, 12), 10_000, 'a peer holding nothing lacks seq 1, committed at 10 s');
  t.equal(c.missingSince(3, 12), 10_000, 'seq 4 was committed within the second after 10 s');
  t.equal(c.missingSince(8, 12), 12_000, 'seq 9 starts the mark at 12 s');
  t.equal(c.missingSince(12, 12), undefined, 'a peer holding the head lacks nothing');
});

t.test('changes from before this process started are at least as old as its start', async (t) => {
  const c = new CommitClock(5_000);
  c.note(101, 9_000);
  t.equal(c.missingSince(40, 120), 5_000, 'seq 41 came before the first mark: reported as old as the start');
});

t.test('past its bound the clock thins its older half and only grows older answers there', async (t) => {
  const c = new CommitClock(0, 8);
  for (let i = 0; i < 9; i++) c.note(i * 10 + 1, i * 1000);
  t.equal(c.marks, 7, 'nine marks over a bound of eight: the older four become two');
  t.equal(c.missingSince(10, 100), 0, 'seq 11 is reported at the time of its older neighbour (0 s), never younger than it is');
  t.equal(c.missingSince(20, 100), 2_000, 'kept marks keep their own time');
  t.equal(c.missingSince(50, 100), 5_000, 'the newer half keeps every mark');
  t.equal(c.missingSince(80, 100), 8_000);
});
