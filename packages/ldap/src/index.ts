export { LdapGateway } from './gateway.js';
export { baseDnProblem } from './layout.js';
export type { LdapGatewayOptions, LdapLog } from './gateway.js';
/** BER building blocks (RFC 4511 framing), for tools that speak LDAP to the gateway without a client library, such as bench/ldap.bench.js */
export { integer, octets, tlv } from './ber.js';
