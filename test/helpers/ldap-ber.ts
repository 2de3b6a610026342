import { integer, octets, tlv } from '../../packages/ldap/dist/ber.js';

/**
 * LDAP requests as raw BER, for tests that talk to the gateway below any
 * client library: to send what a client library would not (a bind or an
 * abandon while a search runs), or to watch the bytes that come back.
 */

/** A simple BindRequest, LDAP version 3. */
export const bindRequest = (id: number, name: string, password: string): Buffer => tlv(0x30, [integer(id), tlv(0x60, [integer(3), octets(name), octets(password, 0x80)])]);

/** An AbandonRequest of message `of`. */
export const abandonRequest = (id: number, of: number): Buffer => tlv(0x30, [integer(id), integer(of, 0x50)]);

/** A WhoAmI extended request (RFC 4532): cheap, answered from the session alone. */
export const whoamiRequest = (id: number): Buffer => tlv(0x30, [integer(id), tlv(0x77, [octets('1.3.6.1.4.1.4203.1.11.3', 0x80)])]);
