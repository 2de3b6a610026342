// A bare Node http server for xml.bench.js (not a benchmark itself): answers
// every request with the same XML body of argv[2] bytes, with the headers a
// Meridian GET carries, so the two differ only in what Meridian does.
import { createServer } from 'node:http';

const size = Number(process.argv[2]);
const body = Buffer.alloc(size, 'x');
const server = createServer({ keepAliveTimeout: 5000 }, (req, res) => {
  res.writeHead(200, { 'content-type': 'application/xml; charset=utf-8', 'content-length': size, 'cache-control': 'no-cache', etag: '"0123456789abcdef"' });
  res.end(body);
});
server.listen(0, '127.0.0.1', () => process.send({ t: 'ready', port: server.address().port }));
process.on('disconnect', () => process.exit(0));
