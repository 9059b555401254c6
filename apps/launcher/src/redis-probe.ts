import { accessSync, constants } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

/**
 * Sends one command to a Redis at host:port and resolves with the start of its raw reply, or
 * undefined when nothing answers within `timeoutMs`. Enough to probe without a client library.
 */
export function redisReply(host: string, port: number, command: string[], timeoutMs = 500): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (reply: string | undefined) => {
      socket.destroy();
      resolve(reply);
    };
    socket.setTimeout(timeoutMs, () => done(undefined));
    socket.once('error', () => done(undefined));
    socket.once('close', () => done(undefined));
    socket.once('connect', () => socket.write(`*${command.length}\r\n${command.map((part) => `$${Buffer.byteLength(part)}\r\n${part}\r\n`).join('')}`));
    socket.once('data', (data) => done(data.toString()));
  });
}

/** Whether something answering PING listens at host:port. */
export async function redisAnswers(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return (await redisReply(host, port, ['PING'], timeoutMs))?.startsWith('+PONG') ?? false;
}

/** Finds an executable on PATH. */
export function findExecutable(name: string): string | undefined {
  for (const directory of (process.env.PATH ?? '').split(path.delimiter)) {
    const candidate = path.join(directory, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** A free TCP port on loopback (the OS picks; tiny race until the caller binds it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}
