export { XmlGateway } from './gateway.js';
export { CursorSeal } from './cursor.js';
export type { XmlGatewayOptions, HttpAnswer } from './gateway.js';
export { basicCredentials, charsetOf, parseBasic } from './http.js';
