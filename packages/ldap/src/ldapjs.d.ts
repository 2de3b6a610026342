/**
 * The parts of ldapjs 3.0.7 the gateway uses. Its DefinitelyTyped package
 * describes the 2.x API (no connectionRouter, different DN class), so these
 * are written against the 3.0.7 sources instead.
 */
declare module 'ldapjs' {
  import type { EventEmitter } from 'node:events';
  import type { Socket } from 'node:net';

  export interface Rdn {
    keys(): Iterable<string>;
    getValue(name: string): unknown;
  }
  export class DN {
    static fromString(dn: string): DN;
    readonly length: number;
    rdnAt(i: number): Rdn;
    toString(): string;
  }

  export interface Control {
    type: string;
    criticality: boolean;
    value: unknown;
  }

  export interface LdapConnection extends Socket {
    parser: { write(data: Buffer): unknown; buffer: Buffer | null };
  }

  export interface LdapRequest {
    messageId: number;
    protocolOp: number;
    connection: LdapConnection;
    controls: Control[];
    // bind
    name?: DN;
    credentials?: string;
    // compare
    entry?: DN | string;
    attribute?: string;
    value?: string;
    // modify
    object?: DN;
    changes?: { operation: string; modification: { type: string; values: string[] } }[];
    // extended
    requestName?: string;
    requestValue?: unknown;
  }

  export interface LdapResponse {
    end(status?: number): void;
  }

  export type Handler = (req: LdapRequest, res: LdapResponse, next: (err?: unknown) => void) => void;

  export interface ServerOptions {
    log: object;
    certificate?: Buffer;
    key?: Buffer;
    connectionRouter?: (socket: Socket) => void;
  }

  export interface Server extends EventEmitter {
    newConnection(socket: Socket): void;
    maxConnections: number;
    server: import('node:net').Server;
    bind(name: string, ...handlers: Handler[]): Server;
    compare(name: string, ...handlers: Handler[]): Server;
    modify(name: string, ...handlers: Handler[]): Server;
    add(name: string, ...handlers: Handler[]): Server;
    del(name: string, ...handlers: Handler[]): Server;
    modifyDN(name: string, ...handlers: Handler[]): Server;
    exop(name: string, ...handlers: Handler[]): Server;
    listen(port: number, host: string, callback: () => void): void;
    close(callback?: () => void): void;
    address(): import('node:net').AddressInfo | string | null;
  }

  const ldap: {
    createServer(options: ServerOptions): Server;
    DN: typeof DN;
  };
  export default ldap;
}
