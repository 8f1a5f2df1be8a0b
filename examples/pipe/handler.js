// A --handler pipe handler in Node: one JSON message per line on stdin, one
// answer per line on stdout, many messages at once.
const lines = require('readline').createInterface({ input: process.stdin });
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

async function handle(m) { // your work; here a short wait and a log line
  await sleep(Math.random() * 10);
  console.error(`${m.key} ${m.value}`);
}

lines.on('line', async (line) => {
  const m = JSON.parse(line);
  const status = await handle(m).then(() => 'ok', () => 'retry');
  process.stdout.write(JSON.stringify({ id: m.id, status }) + '\n');
});
