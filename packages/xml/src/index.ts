export { XmlGateway } from './gateway.js';
export type { XmlGatewayOptions, HttpAnswer } from './gateway.js';
export { basicCredentials } from './http.js';
