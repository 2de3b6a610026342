export { XmlGateway } from './gateway.js';
export type { XmlGatewayOptions, HttpAnswer } from './gateway.js';
export { basicCredentials, parseBasic } from './http.js';
