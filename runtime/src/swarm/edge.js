// A server's edge: the one door from the gateway's host into that server's
// own overlay network. It runs in the runtime image (`node -e`), is published
// on the host's loopback only, and relays each TCP connection to the service
// named in BMM_SERVICE on port 8080, resolving the name again for every
// connection (a restarted task has a new address) and going nowhere else.
'use strict';
const net = require('node:net');
const target = process.env.BMM_SERVICE;
const PORT = 8080;
if (!/^bmm-[a-z0-9-]{1,59}$/.test(target || '')) {
  console.error(`BMM_SERVICE=${JSON.stringify(target)} is not a platform service name`);
  process.exit(2);
}
net
  .createServer((client) => {
    const upstream = net.connect({ host: target, port: PORT });
    upstream.setNoDelay(true);
    client.setNoDelay(true);
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    upstream.on('error', (e) => {
      console.error(`${target}: ${e.code || e.message}`);
      close();
    });
    client.on('error', close);
    upstream.on('close', close);
    client.on('close', close);
    client.pipe(upstream);
    upstream.pipe(client);
  })
  .listen(PORT);
