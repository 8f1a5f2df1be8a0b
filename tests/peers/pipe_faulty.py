# A --handler pipe process for tests/pipe.rs: answers like the README's
# example, checks what the consumer promises, and misbehaves on request.
#
# Every message it finishes is appended to the file PIPE_LOG, shared by all
# its processes, as
#   handled KEY VALUE attempt=N
# before the answer is written, so the file's order is the order messages
# were finished in, across restarts (stderr lines of a killed process can
# reach the consumer's log after its successor's). A broken promise is
# logged on stderr as "VIOLATION ...": more than PIPE_INFLIGHT messages
# outstanding, or two outstanding messages of one key.
#
# PIPE_FAULT picks one misbehaviour (once over all processes, marked by
# creating the file PIPE_MARK):
#   crash:N     exit with status 3 on receiving its N-th message
#   garbage:N   answer its N-th message with a line that is not JSON
#   unknown:N   answer its N-th message with an id it was never given
#   hang:VALUE  never answer VALUE's first attempt
#   fail:VALUE  answer "fail" to VALUE (every attempt; not a one-off)
import asyncio, json, os, random, sys

fault = os.environ.get("PIPE_FAULT", "")
kind, _, arg = fault.partition(":")
inflight = int(os.environ["PIPE_INFLIGHT"])
outstanding = {}  # id -> key
received = 0
log = os.open(os.environ["PIPE_LOG"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

def first_time():
    try:
        fd = os.open(os.environ["PIPE_MARK"], os.O_CREAT | os.O_EXCL)
        os.close(fd)
        return True
    except FileExistsError:
        return False

def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

async def serve(m):
    await asyncio.sleep(random.random() / 200)
    del outstanding[m["id"]]
    if kind == "fail" and m["value"] == arg:
        say({"id": m["id"], "status": "fail", "reason": f"{arg} is bad"})
        return
    # One write(2) with O_APPEND: whole lines, in the order they happen.
    os.write(log, f"handled {m['key']} {m['value']} attempt={m['attempt']}\n".encode())
    say({"id": m["id"], "status": "ok"})

async def main():
    global received
    loop, tasks = asyncio.get_running_loop(), set()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        m = json.loads(line)
        received += 1
        if m["key"] in outstanding.values():
            print("VIOLATION two outstanding messages of key", m["key"], file=sys.stderr, flush=True)
        outstanding[m["id"]] = m["key"]
        if len(outstanding) > inflight:
            print("VIOLATION", len(outstanding), "outstanding, more than", inflight, file=sys.stderr, flush=True)
        if kind in ("crash", "garbage", "unknown") and received == int(arg) and first_time():
            if kind == "crash":
                os._exit(3)
            elif kind == "garbage":
                sys.stdout.write("this is not json\n"); sys.stdout.flush()
            else:
                say({"id": 10**12, "status": "ok"})
            continue
        if kind == "hang" and m["value"] == arg and m["attempt"] == 1:
            continue
        task = asyncio.create_task(serve(m))
        tasks.add(task); task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)

asyncio.run(main())
