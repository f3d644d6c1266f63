// An interop target on Node's own `http` (HTTP/1.1) and `http2` (h2c with prior knowledge)
// modules: both listen on an ephemeral port of 127.0.0.1, the first stdout line names the
// ports, then every request received becomes one JSON line on stdout (its headers as the
// application saw them, pseudo-headers included, the body in hex) and is answered 200.
'use strict';
const http = require('http');
const http2 = require('http2');

function echo(server) {
  return (req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const headers = [];
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        headers.push([req.rawHeaders[i], req.rawHeaders[i + 1]]);
      }
      const record = {
        port: server.address().port,
        version: 'HTTP/' + req.httpVersion,
        method: req.method,
        target: req.url,
        headers,
        body_hex: Buffer.concat(chunks).toString('hex'),
      };
      process.stdout.write(JSON.stringify(record) + '\n');
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok\n');
    });
  };
}

const h1 = http.createServer();
h1.on('request', echo(h1));
const h2 = http2.createServer();
h2.on('request', echo(h2));
h1.listen(0, '127.0.0.1', () => {
  h2.listen(0, '127.0.0.1', () => {
    const ports = { h1: h1.address().port, h2: h2.address().port };
    process.stdout.write(JSON.stringify({ listening: ports }) + '\n');
  });
});
