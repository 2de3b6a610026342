import { DEFAULT_SCHEMA } from '@meridian/node';
import { loadSchemaFile, type Schema } from '@meridian/store';

export const crmSchema: Schema = loadSchemaFile(DEFAULT_SCHEMA);

/** Cheap scrypt for tests that set passwords; production cost is the default. */
export const TEST_COST = { N: 1024, r: 8, p: 1 };
