"""A websockets server for transit's interop tests.

Usage: server.py PATH OUTPUT_FILE
Listens on 127.0.0.1 (a free port, printed as "PORT <n>" on stdout), accepts
one connection on PATH offering subprotocol "binary", writes every binary
message it receives to OUTPUT_FILE, and exits after the client's close.
"""
import asyncio
import sys

import websockets


async def main():
    path, output = sys.argv[1], sys.argv[2]
    done = asyncio.get_running_loop().create_future()

    async def handler(ws, req_path=None):
        req_path = req_path if req_path is not None else ws.path
        if req_path != path:
            await ws.close(1008, "wrong path")
            done.set_result(f"wrong path {req_path}")
            return
        total = 0
        with open(output, "wb") as f:
            async for msg in ws:
                if isinstance(msg, str):
                    done.set_result("got a text message")
                    return
                f.write(msg)
                total += len(msg)
        done.set_result(f"ok {total} {ws.close_code} {ws.subprotocol}")

    async with websockets.serve(handler, "127.0.0.1", 0, subprotocols=["binary"],
                                max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        result = await asyncio.wait_for(done, 60)
        print(result, flush=True)


asyncio.run(main())
