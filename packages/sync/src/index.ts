export { SyncSession } from './session.js';
export type { Action, SessionOptions, SessionState, SessionStats } from './session.js';
export { encodeFrame, decodeFrame, FrameError, PROTOCOL_VERSION } from './frames.js';
export type { Frame, Role, WireChange } from './frames.js';
export { backoffDelay } from './backoff.js';
export { Replicator } from './replicator.js';
export type { PeerState, PeerStatus, ReplicatorLog, ReplicatorOptions } from './replicator.js';
export { runActions, releaseSnapshot } from './executor.js';
export type { FeedStore, SessionIo } from './executor.js';
