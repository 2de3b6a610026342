import type { IncomingMessage, ServerResponse } from 'node:http';
import { HttpError, readJson, sendJson } from './http-util.js';
import { checkReplicaName, type ReplicaRegistry } from './replica-registry.js';

/**
 * `/api/replicas` on a master: issue, list and revoke replica credentials.
 * The credential is shown once, when issued; the master keeps only its
 * name and serial (the key is derived from the cluster secret).
 */
export async function handleReplicas(registry: ReplicaRegistry, maxBody: number, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  const parts = url.pathname.split('/').filter(Boolean); // ['api', 'replicas', name?]
  const method = req.method ?? 'GET';
  if (parts.length === 2) {
    if (method === 'GET' || method === 'HEAD') {
      sendJson(res, 200, { items: await registry.list() });
      return;
    }
    if (method === 'POST') {
      const body = await readJson(req, maxBody);
      if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HttpError(400, 'the body must be a JSON object {"name": "laptop-17"}');
      const name = checkReplicaName((body as Record<string, unknown>)['name']);
      const credential = await registry.issue(name, 'admin');
      sendJson(res, 201, { name, credential });
      return;
    }
    throw new HttpError(405, `${method} is not allowed here; use GET or POST`, 'method-not-allowed', { allow: 'GET, POST' });
  }
  if (parts.length === 3) {
    let name: string;
    try {
      name = checkReplicaName(decodeURIComponent(parts[2]!));
    } catch (e) {
      throw e instanceof URIError ? new HttpError(400, 'the replica name is not valid percent-encoding') : e;
    }
    if (method !== 'DELETE') throw new HttpError(405, `${method} is not allowed here; use DELETE to revoke`, 'method-not-allowed', { allow: 'DELETE' });
    await registry.revoke(name, 'admin');
    sendJson(res, 200, { name, revoked: true });
    return;
  }
  throw new HttpError(404, `no such API resource ${url.pathname}`, 'not-found');
}
