"""A no-op CRM and Billing for benchmarks: every request is answered at once with 200.

`python -m bench.upstream PORT`. HTTP/1.1 with keep-alive on asyncio, so the upstream costs
a few microseconds per call and the figures measure Courier. GETs get a small customer
record, PUTs get `{"ok": true}`; nothing is recorded.
"""

from __future__ import annotations

import asyncio
import sys

_RECORD = b'{"id": "c_1", "name": "Customer 1", "email": "c_1@example.com"}'
_OK = b'{"ok": true}'


def _response(body: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


GET_RESPONSE = _response(_RECORD)
PUT_RESPONSE = _response(_OK)


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            writer.write(GET_RESPONSE if head.startswith(b"GET") else PUT_RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", port, backlog=1024)
    print(f"no-op upstream on http://127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
