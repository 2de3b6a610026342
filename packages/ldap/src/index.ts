export { LdapGateway } from './gateway.js';
export type { LdapGatewayOptions, LdapLog } from './gateway.js';
export { BindThrottle } from './bind-throttle.js';
export { DirectoryLayout, ID_ATTR } from './layout.js';
export { ENTITLEMENT_ATTR, entryUuid, generalizedTime } from './entries.js';
