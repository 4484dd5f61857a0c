#!/usr/bin/env node
// Colyseus baseline for the respawn-load chat comparison.
//
//   node server.js --port P [--room-size N]
//
// Listens on 127.0.0.1:P (0 = any free port) and prints exactly
// `listening <port>` on stdout once it accepts connections. One room type,
// "chat", filtered by the `room` join option, so joinOrCreate("chat",
// {room: "load-3", name}) seats players of the same room name together (a
// full room makes joinOrCreate open another one with the same name). No state
// schema: only the message path. Presence and driver are Colyseus's defaults
// (local, in-process). SIGTERM/SIGINT run Colyseus's graceful shutdown, which
// exits 0.
'use strict';

const { Server, Room } = require('@colyseus/core');
const { WebSocketTransport } = require('@colyseus/ws-transport');

function usage(msg) {
  process.stderr.write(`${msg}\nusage: node server.js --port P [--room-size N]\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const args = { port: 0, roomSize: 10 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (flag === '--port' || flag === '--room-size') {
      if (value === undefined || !/^\d+$/.test(value)) usage(`${flag} needs a number`);
      i++;
      if (flag === '--port') args.port = Number(value);
      else args.roomSize = Number(value);
    } else {
      usage(`unknown argument ${flag}`);
    }
  }
  if (args.port > 65535) usage('--port must be 0..65535');
  if (args.roomSize < 1 || args.roomSize > 256) usage('--room-size must be 1..256');
  return args;
}

const { port, roomSize } = parseArgs(process.argv.slice(2));

class ChatRoom extends Room {
  maxClients = roomSize;

  onCreate() {
    this.nextId = 1;
    this.onMessage('say', (client, msg) => {
      const who = client.userData;
      this.broadcast('said', {
        type: 'said',
        id: who.id,
        from: who.name,
        text: msg?.say ?? msg,
        at: Date.now(),
      });
    });
  }

  onJoin(client, options) {
    client.userData = { id: this.nextId++, name: String(options?.name ?? '') };
  }
}

async function main() {
  const gameServer = new Server({
    transport: new WebSocketTransport(),
    greet: false,
    devMode: false,
  });
  gameServer.define('chat', ChatRoom).filterBy(['room']);
  await gameServer.listen(port, '127.0.0.1');
  const bound = gameServer.transport.server.address();
  process.stdout.write(`listening ${bound.port}\n`);
}

main().catch((err) => {
  process.stderr.write(`colyseus server failed: ${err && err.stack || err}\n`);
  process.exit(1);
});
