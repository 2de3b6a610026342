import { parseDocument, XmlError, type ObjectInput } from './format.js';

/** One `<object>` element's text as streamObjects cut it, and the line and column it starts at. */
export interface Piece {
  text: string;
  line: number;
  /** 1 when absent */
  column?: number;
}

/** Consecutive pieces as one string, where each ends in it, and the line each starts on. */
export interface PieceGroup {
  text: string;
  ends: number[];
  lines: number[];
  columns: number[];
}

/** The objects of a group, each with its line, up to the first malformed one (`bad`). */
export interface ParsedPieces {
  parsed: [line: number, input: ObjectInput][];
  bad?: XmlError | undefined;
}

export function groupOf(pieces: readonly Piece[]): PieceGroup {
  let end = 0;
  return { text: pieces.map((p) => p.text).join(''), ends: pieces.map((p) => (end += p.text.length)), lines: pieces.map((p) => p.line), columns: pieces.map((p) => p.column ?? 1) };
}

/**
 * The objects of consecutive pieces of the document, in order, up to the
 * first malformed one (`bad`). They are parsed as one `<objects>` document
 * when that holds exactly one object per piece: a parser built per object
 * cost more than the parse itself (68 us an object alone, 47 us in groups
 * of 16-64). Otherwise each piece is parsed alone, so a malformed object is
 * reported with its own line and only the objects before it are applied; a
 * malformed object ends the import, since what follows it cannot be trusted
 * to be what the sender meant.
 */
export function parseGroup(g: PieceGroup): ParsedPieces {
  const n = g.lines.length;
  if (n > 1) {
    try {
      const all = parseDocument(`<objects>${g.text}</objects>`, 'objects');
      if (all.length === n) return { parsed: g.lines.map((line, i) => [line, all[i]!]) };
    } catch (e) {
      if (!(e instanceof XmlError)) throw e;
    }
  }
  const parsed: [number, ObjectInput][] = [];
  for (let i = 0; i < n; i++) {
    const line = g.lines[i]!;
    try {
      // (set at its column, so that an error's column is the document's: objects may share a line)
      const indent = ' '.repeat(Math.max(0, (g.columns[i] ?? 1) - 1));
      parsed.push([line, parseDocument(indent + g.text.slice(i === 0 ? 0 : g.ends[i - 1], g.ends[i]), 'object', line - 1)[0]!]);
    } catch (e) {
      if (!(e instanceof XmlError)) throw e;
      // a shape error (no type, an unknown attribute) says which object
      const bad = e.message.startsWith('malformed XML') ? e : new XmlError(e.status, `the <object> at line ${line}: ${e.message}`, e.field);
      return { parsed, bad };
    }
  }
  return { parsed };
}

/** parseGroup on the event loop, as a promise (rejected, not thrown, should the parser fail). */
export function parseHere(g: PieceGroup): Promise<ParsedPieces> {
  return new Promise((resolve) => resolve(parseGroup(g)));
}
