# A --handler pipe handler in Python (asyncio): one JSON message per line on
# stdin, one answer per line on stdout, many messages at once.
import asyncio, json, random, sys

async def handle(m):  # your work; here a short wait and a log line
    await asyncio.sleep(random.random() / 100)
    print(m["key"], m["value"], file=sys.stderr, flush=True)

async def main():
    loop, tasks = asyncio.get_running_loop(), set()
    stdin = asyncio.StreamReader(limit=1 << 24)  # non-blocking reads and writes:
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    out, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout)

    async def answer(m):
        try:
            await handle(m); status = "ok"
        except Exception:
            status = "retry"
        out.write(json.dumps({"id": m["id"], "status": status}).encode() + b"\n")

    while line := await stdin.readline():
        task = asyncio.create_task(answer(json.loads(line)))
        tasks.add(task); task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)

asyncio.run(main())
