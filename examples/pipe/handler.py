# A --handler pipe handler in Python (asyncio): one JSON message per line on
# stdin, one answer per line on stdout, many messages at once.
import asyncio, json, random, sys

async def handle(m):  # your work; here a short wait and a log line
    await asyncio.sleep(random.random() / 100)
    print(m["key"], m["value"], file=sys.stderr, flush=True)

async def answer(m):
    try:
        await handle(m); status = "ok"
    except Exception:
        status = "retry"
    print(json.dumps({"id": m["id"], "status": status}), flush=True)

async def main():
    loop, tasks = asyncio.get_running_loop(), set()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        task = asyncio.create_task(answer(json.loads(line)))
        tasks.add(task); task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)

asyncio.run(main())
