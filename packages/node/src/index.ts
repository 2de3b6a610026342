export { MeridianNode, VERSION, initDataDir } from './node.js';
export type { StatusJson } from './node.js';
export { resolveConfig, readConfigFile, DEFAULT_SCHEMA, kebab, SettingError } from './config.js';
export { checkReplicaName } from './replica-registry.js';
export type { NodeConfig, ConfigInput } from './config.js';
export { generateSample, prng } from './sample-data.js';
export type { SampleObject, SampleOptions } from './sample-data.js';
export type { ObjectJson } from './admin-api.js';
export type { PeerStatus } from '@meridian/sync';
