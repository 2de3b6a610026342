export { LdapGateway } from './gateway.js';
export type { LdapGatewayOptions, LdapLog } from './gateway.js';
