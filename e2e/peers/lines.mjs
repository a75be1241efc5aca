// The line protocol of the peer scripts (see peers.go): one JSON command
// per line on stdin, {id, op, ...}; one JSON answer per line on stdout,
// {id, ok: true, result} or {id, ok: false, error}. The process exits
// when stdin closes.
import * as readline from 'node:readline';

// serveLines answers each command with ops[cmd.op](cmd); errorJSON turns
// an exception into the error object the Go side reads.
export function serveLines(ops, errorJSON) {
  const answer = (a) => process.stdout.write(`${JSON.stringify(a)}\n`);
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  rl.on('line', async (line) => {
    if (!line.trim()) return;
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (err) {
      answer({ id: null, ok: false, error: errorJSON(err) });
      return;
    }
    const op = ops[cmd.op];
    try {
      if (!op) throw new Error(`unknown op ${JSON.stringify(cmd.op)}`);
      answer({ id: cmd.id, ok: true, result: await op(cmd) });
    } catch (err) {
      answer({ id: cmd.id, ok: false, error: errorJSON(err) });
    }
  });
  rl.on('close', () => process.exit(0));
}
