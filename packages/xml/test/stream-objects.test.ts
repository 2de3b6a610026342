import t from 'tap';
import { streamObjects } from '../dist/stream-objects.js';

async function* chunked(doc: string, size: number): AsyncGenerator<Buffer> {
  const bytes = Buffer.from(doc);
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

async function split(doc: string, size: number): Promise<{ text: string; line: number }[]> {
  const out: { text: string; line: number }[] = [];
  for await (const p of streamObjects(chunked(doc, size), 1 << 20)) out.push(p);
  return out;
}

// every kind of markup the splitter must step over while looking for an object's end
const OBJECTS = [
  '<object type="A" id="a1"><field name="x">plain</field></object>',
  '<object type="A" id="a2"><field name="x"><![CDATA[holds </object> and <!-- and ]] ]]></field></object>',
  '<object type="A" id="a3"><!-- a comment holding </object> and <![CDATA[ --><field name="x">y</field></object>',
  '<object type="A" id="a4" note="a > in quotes"/>',
  '<object type="A" id="a5"><field name="x">&lt;!-- not a comment &amp; </field></object >',
  '<object type="A" id="a6"><field name="x">é 😀</field><!----></object>',
];
const DOC = `<?xml version="1.0"?>\n<!-- before -->\n<objects>\n${OBJECTS.join('\n<!-- between </object> -->\n')}\n</objects>\n<!-- after -->\n`;

t.test('pieces are the objects, with their lines, whatever the chunking', async (t) => {
  const whole = await split(DOC, DOC.length);
  t.same(
    whole.map((p) => p.text),
    OBJECTS,
  );
  t.same(
    whole.map((p) => p.line),
    OBJECTS.map((_, i) => 4 + 2 * i),
  );
  for (const size of [1, 2, 3, 7, 9, 64]) t.same(await split(DOC, size), whole, `chunks of ${size} bytes`);
});

t.test('an unterminated section or object is reported, not skipped', async (t) => {
  for (const size of [1, 5, 1000]) {
    await t.rejects(split('<objects><object type="A"><![CDATA[ </object> never closed', size), /an <object> is not closed before the document ends/);
    await t.rejects(split('<objects><object type="A"><!-- </object> never closed', size), /an <object> is not closed before the document ends/);
    await t.rejects(split('<objects><object type="A"><field name="x">v</field></obj', size), /an <object> is not closed before the document ends/);
  }
});

t.test('a "<!" that opens neither a comment nor CDATA does not hide the end tag', async (t) => {
  for (const size of [1, 4, 1000]) {
    const [p] = await split('<objects><object type="A"><!DOCTYPE x></object></objects>', size);
    t.equal(p?.text, '<object type="A"><!DOCTYPE x></object>', `chunks of ${size} bytes`);
  }
});

t.test('what is buffered outside an <object> is bounded like an object', async (t) => {
  const max = 4096;
  // each input is endless unless bounded: the generator would be pulled for ever
  const endless = async function* (head: string, filler: string): AsyncGenerator<Buffer> {
    yield Buffer.from(head);
    for (;;) yield Buffer.from(filler.repeat(256));
  };
  const cases: [string, string, RegExp][] = [
    ['<objects><!--', 'x', /^a comment at line 1 is larger than 4096 bytes$/],
    ['<?xml version="1.0"', ' ', /^the XML declaration at line 1 is larger than 4096 bytes$/],
    ['<objects a="', 'x', /^the <objects> start tag at line 1 is larger than 4096 bytes$/],
    ['<objects></objects', ' ', /^the <\/objects> tag at line 1 is larger than 4096 bytes$/],
  ];
  for (const [head, filler, message] of cases) {
    const err = await (async () => {
      try {
        for await (const _ of streamObjects(endless(head, filler), max)) void _;
      } catch (e) {
        return e as { status?: number; message: string };
      }
      return undefined;
    })();
    t.equal(err?.status, 413, `${head}: refused as too large`);
    t.match(err?.message, message);
  }
});
