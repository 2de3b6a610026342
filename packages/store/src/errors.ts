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
  /** try again shortly: what the request needs is on its way (503 with Retry-After, LDAP busy) */
  | 'busy'
  | 'forbidden'
  /** the node's own state stands in the way (409): what it holds, not the request, must change first */
  | 'conflict'
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
  /** the message without the id of the object that holds a unique value, for those who may not see that object */
  readonly withoutHolder: string | undefined;
  constructor(opts: { objectId?: string; type?: string; field?: string; rule: string; message: string; withoutHolder?: string }) {
    super('validation', opts.message);
    this.name = 'ValidationError';
    this.objectId = opts.objectId;
    this.type = opts.type;
    this.field = opts.field;
    this.rule = opts.rule;
    this.withoutHolder = opts.withoutHolder;
  }
}

/**
 * The error as a principal who does not see everything is told it: a
 * unique value's holder is not named, or a refused mail address would tell
 * anyone whose entry it is.
 */
export function asSeenBy(e: unknown, seesEverything: boolean): unknown {
  if (seesEverything || !(e instanceof ValidationError) || e.withoutHolder === undefined) return e;
  return new ValidationError({ objectId: e.objectId, type: e.type, field: e.field, rule: e.rule, message: e.withoutHolder });
}

export function isMeridianError(e: unknown): e is MeridianError {
  return e instanceof MeridianError;
}

/**
 * Whether opening a LevelDB failed because a process (another, or this
 * one) holds its directory's lock. classic-level codes every failure to
 * lock LEVEL_LOCKED, a file system without locks (NFS without lockd) too,
 * which no process holds: only LevelDB's words tell the two apart.
 */
export function lockedByProcess(e: unknown): boolean {
  const err = e as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const locked = err.code === 'LEVEL_LOCKED' || err.cause?.code === 'LEVEL_LOCKED';
  return locked && /already held by process|Resource temporarily unavailable/.test(`${err.message ?? ''} ${err.cause?.message ?? ''}`);
}

/** Why the LevelDB in `dir` did not open, as one sentence: another process has it, or LevelDB's own reason. */
export function openFailure(dir: string, e: unknown): MeridianError {
  if (lockedByProcess(e)) return new MeridianError('locked', `data dir ${dir} is in use by another Meridian process; stop it or choose another --dir`);
  const err = e as { message?: string; cause?: { message?: string } };
  return new MeridianError('bad-request', `cannot open the store in ${dir}: ${err.cause?.message ?? err.message ?? String(e)}`);
}
