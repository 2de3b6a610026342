import { parseSchema } from '@meridian/store';

/** The one type the sync tests replicate: free-form fields, no references; `u` is unique, for the simulation to clash on. */
export const thingSchema = parseSchema(`
types:
  Thing:
    idPrefix: thg
    fields:
      a: { type: string }
      b: { type: string }
      c: { type: integer }
      tags: { type: string, multi: true }
      u: { type: string, unique: true }
`);
