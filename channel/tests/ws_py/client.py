"""A websockets client for transit's interop tests.

Usage: client.py URL INPUT_FILE CHUNK
Connects to URL offering subprotocol "binary", sends INPUT_FILE as binary
messages of CHUNK bytes, then closes with status 1000 and waits for the
server's answer. Prints "ok <bytes> <subprotocol>".
"""
import asyncio
import sys

import websockets


async def main():
    url, path, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(path, "rb") as f:
        data = f.read()
    async with websockets.connect(url, subprotocols=["binary"], max_size=None,
                                  close_timeout=20) as ws:
        for i in range(0, len(data), chunk):
            await ws.send(data[i:i + chunk])
        await ws.close(1000, "done")
        print(f"ok {len(data)} {ws.subprotocol}", flush=True)


asyncio.run(asyncio.wait_for(main(), 60))
