import { parseSchema } from '@meridian/store';

/** The one type the sync tests replicate: free-form fields, no references or unique values to get in the way. */
export const thingSchema = parseSchema(`
types:
  Thing:
    idPrefix: thg
    fields:
      a: { type: string }
      b: { type: string }
      c: { type: integer }
      tags: { type: string, multi: true }
`);
