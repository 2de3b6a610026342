/**
 * Every error the store raises carries a machine-readable `code` so that each
 * surface (HTTP, CLI, later LDAP) can map it to its own status without parsing
 * the sentence, and a message that is one sentence a person can act on.
 */
export type ErrorCode =
  | 'validation'
  | 'not-found'
  | 'exists'
  | 'precondition'
  | 'closed'
  | 'locked'
  | 'forbidden'
  | 'bad-request';

export class MeridianError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'MeridianError';
    this.code = code;
  }
}

/** A write that breaks a schema rule; names the object, the field and the rule. */
export class ValidationError extends MeridianError {
  readonly objectId: string | undefined;
  readonly type: string | undefined;
  readonly field: string | undefined;
  readonly rule: string;
  constructor(opts: { objectId?: string; type?: string; field?: string; rule: string; message: string }) {
    super('validation', opts.message);
    this.name = 'ValidationError';
    this.objectId = opts.objectId;
    this.type = opts.type;
    this.field = opts.field;
    this.rule = opts.rule;
  }
}

export function isMeridianError(e: unknown): e is MeridianError {
  return e instanceof MeridianError;
}
