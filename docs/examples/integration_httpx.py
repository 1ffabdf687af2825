"""httpx fetching over HTTPS through trio_tlsretry.TLSStream (docs/integrations.rst)."""

from __future__ import annotations

import ssl
import sys

import httpx
import trio

import trio_tlsretry


async def get_with_retries(
    client: httpx.AsyncClient, url: str, *, attempts: int = 3, seconds_per_attempt: float = 10
) -> httpx.Response:
    """GET ``url``; an attempt that times out is tried again, on the same client."""
    for _ in range(attempts - 1):
        try:
            return await client.get(url, timeout=seconds_per_attempt)
        except httpx.TimeoutException:
            pass  # the client dropped that connection; its pool opens another
    return await client.get(url, timeout=seconds_per_attempt)


async def fetch_all(urls: list[str], context: ssl.SSLContext) -> list[bytes]:
    """Fetch ``urls`` concurrently on one client (over HTTP/2 where the server speaks it)."""
    bodies: dict[str, bytes] = {}

    async def fetch(url: str) -> None:
        response = await get_with_retries(client, url)
        response.raise_for_status()
        bodies[url] = response.content

    async with (
        httpx.AsyncClient(verify=context, http2=True) as client,
        trio.open_nursery() as nursery,
    ):
        for url in urls:
            nursery.start_soon(fetch, url)
    return [bodies[url] for url in urls]


def main(urls: list[str], cafile: str | None = None) -> None:
    # httpcore's trio backend wraps every https:// connection in
    # trio.SSLStream(...): from now on, that is a TLSStream.
    trio_tlsretry.inject_into_trio()
    context = ssl.create_default_context(cafile=cafile)
    for url, body in zip(urls, trio.run(fetch_all, urls, context), strict=True):
        print(f"{url}: {len(body)} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
