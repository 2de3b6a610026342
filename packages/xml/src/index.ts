export { XmlGateway } from './gateway.js';
export type { XmlGatewayOptions, HttpAnswer } from './gateway.js';
export { objectXml, parseDocument, XmlError, escapeText, escapeAttr } from './format.js';
export type { ObjectInput } from './format.js';
export { streamObjects } from './stream-objects.js';
export { exportOrder } from './import-export.js';
