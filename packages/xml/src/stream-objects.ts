import { screen, XmlError } from './format.js';
import type { Piece } from './parse-pieces.js';

/**
 * Splits a streamed `<objects>` document into the text of each `<object>`
 * element without holding the document in memory, so an import of millions
 * of objects needs memory for a few groups of objects. The pieces are then
 * parsed in groups (parseGroup in parse-pieces.ts). Comments and CDATA
 * sections are skipped over when looking for an object's end.
 */
export async function* streamObjects(chunks: AsyncIterable<Buffer | string>, maxObject: number): AsyncGenerator<Piece> {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let buf = '';
  /** line number (1-based) of buf[0], and its column in that line (1-based) */
  let line = 1;
  let column = 1;
  let state: 'prolog' | 'between' | 'done' = 'prolog';
  let ended = false;
  const it = chunks[Symbol.asyncIterator]();

  const more = async (): Promise<boolean> => {
    if (ended) return false;
    const r = await it.next();
    if (r.done) {
      ended = true;
      try {
        buf += decoder.decode();
      } catch {
        throw new XmlError(400, `the document is not valid UTF-8 (near line ${line + count(buf)})`);
      }
      return false;
    }
    try {
      buf += typeof r.value === 'string' ? r.value : decoder.decode(r.value, { stream: true });
    } catch {
      throw new XmlError(400, `the document is not valid UTF-8 (near line ${line + count(buf)})`);
    }
    return true;
  };
  /** the column of buf[at], counted from the line's start, not from buf[0] (objects may share a line) */
  const columnAt = (at: number): number => {
    const nl = buf.lastIndexOf('\n', at - 1);
    return nl >= 0 && at > 0 ? at - nl : column + at;
  };
  const drop = (n: number): void => {
    const nextColumn = columnAt(n);
    line += count(buf.slice(0, n));
    column = nextColumn;
    buf = buf.slice(n);
  };
  const fail = (at: number, problem: string): XmlError => {
    const before = buf.slice(0, at);
    return new XmlError(400, `malformed XML at line ${line + count(before)}, column ${columnAt(at)}: ${problem}`);
  };
  /**
   * What is buffered while looking for the end of an <object>, or of a
   * comment, declaration or tag outside one, is bounded: an unclosed comment
   * would otherwise hold the rest of the upload in memory.
   */
  const bounded = (what: string): void => {
    if (buf.length > maxObject) throw new XmlError(413, `${what} at line ${line} is larger than ${maxObject} bytes`);
  };
  /** Skips whitespace, comments and (in the prolog) the XML declaration; false when more input is needed. */
  const skipMisc = async (allowDecl: boolean): Promise<void> => {
    for (;;) {
      const ws = /^\s*/.exec(buf)![0].length;
      drop(ws);
      if (buf.length === 0) {
        if (!(await more())) return;
        continue;
      }
      if (buf.startsWith('<!--')) {
        let end = buf.indexOf('-->', 4);
        while (end < 0) {
          bounded('a comment');
          if (!(await more())) throw fail(0, 'a comment is not closed');
          end = buf.indexOf('-->', 4);
        }
        drop(end + 3);
        continue;
      }
      // enough to tell "<objects>", "</objects>", "<object " and "<![CDATA[" apart, however the body trickles in
      if (buf.length < 10 && !ended) {
        await more();
        continue;
      }
      if (allowDecl && buf.startsWith('<?')) {
        let end = buf.indexOf('?>');
        while (end < 0) {
          bounded('the XML declaration');
          if (!(await more())) throw fail(0, 'the XML declaration is not closed');
          end = buf.indexOf('?>');
        }
        screen(buf.slice(0, end + 2), line - 1);
        drop(end + 2);
        continue;
      }
      return;
    }
  };
  /** Index just past the start tag beginning at 0 ('>' outside quotes), or -1 when more input is needed. */
  const tagEnd = (): number => {
    let quote = '';
    for (let i = 1; i < buf.length; i++) {
      const c = buf[i]!;
      if (quote) {
        if (c === quote) quote = '';
      } else if (c === '"' || c === "'") quote = c;
      else if (c === '>') return i + 1;
    }
    return -1;
  };

  while (state !== 'done') {
    await skipMisc(state === 'prolog');
    if (buf.length === 0 && ended) throw fail(0, state === 'prolog' ? 'the document is empty; send <objects>...</objects>' : 'the document ends before </objects>');
    if (buf.startsWith('<!')) screen(buf.slice(0, 200), line - 1);
    if (state === 'prolog') {
      if (!/^<objects[\s/>]/.test(buf)) throw fail(0, 'the root element must be <objects>');
      let end = tagEnd();
      while (end < 0) {
        bounded('the <objects> start tag');
        if (!(await more())) throw fail(0, 'the <objects> start tag is not closed');
        end = tagEnd();
      }
      const selfClosed = buf[end - 2] === '/';
      drop(end);
      state = selfClosed ? 'done' : 'between';
      continue;
    }
    if (buf.startsWith('</objects')) {
      let end = buf.indexOf('>');
      while (end < 0) {
        bounded('the </objects> tag');
        if (!(await more())) throw fail(0, 'the </objects> tag is not closed');
        end = buf.indexOf('>');
      }
      if (!/^<\/objects\s*>$/.test(buf.slice(0, end + 1))) throw fail(0, 'malformed </objects> tag');
      drop(end + 1);
      state = 'done';
      continue;
    }
    if (!/^<object[\s/>]/.test(buf)) {
      if (buf.length < 8 && !ended && (await more())) continue;
      throw fail(0, `expected <object> or </objects>, got ${JSON.stringify(buf.slice(0, 20))}`);
    }
    // one <object> element: find its end, skipping comments and CDATA
    let start = tagEnd();
    while (start < 0) {
      bounded('an <object>');
      if (!(await more())) throw fail(0, 'an <object> start tag is not closed');
      start = tagEnd();
    }
    let end = -1;
    if (buf[start - 2] === '/') end = start;
    let from = start;
    while (end < 0) {
      // Searched only up to the candidate end tag: a search for "<![CDATA[" or
      // "<!--" that found none ran to the end of the buffered input, once per
      // object, and was most of the splitter's time (27 us an object).
      const close = buf.indexOf('</object', from);
      const limit = close >= 0 ? close : buf.length;
      const bang = buf.lastIndexOf('<!', limit) >= from ? buf.indexOf('<!', from) : -1;
      const cdata = bang >= 0 && buf.startsWith('<![CDATA[', bang);
      const comment = bang >= 0 && buf.startsWith('<!--', bang);
      if (cdata || comment) {
        const term = cdata ? ']]>' : '-->';
        const stop = buf.indexOf(term, bang + 4);
        if (stop >= 0) {
          from = stop + term.length;
          continue;
        }
      } else if (bang >= 0 && (close >= 0 || buf.length - bang >= 9)) {
        // some other "<!" (which screen() refuses later): not a section to skip
        from = bang + 2;
        continue;
      } else if (close >= 0) {
        const gt = buf.indexOf('>', close);
        if (gt >= 0) {
          end = gt + 1;
          break;
        }
      }
      bounded('an <object>');
      if (!(await more())) throw fail(0, 'an <object> is not closed before the document ends');
    }
    const text = buf.slice(0, end);
    const [at, col] = [line, column];
    drop(end);
    yield { text, line: at, column: col };
  }
  // only whitespace and comments may follow
  await skipMisc(false);
  if (buf.length > 0) throw fail(0, 'content after </objects>');
}

function count(s: string): number {
  let n = 0;
  for (let i = s.indexOf('\n'); i >= 0; i = s.indexOf('\n', i + 1)) n++;
  return n;
}
