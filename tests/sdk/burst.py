"""A burst through the official `openai` Python SDK: COUNT chat completions fired at once.

Usage: python burst.py BASE_URL MODEL COUNT
Prints one JSON line: {"ok": n, "status_429": n, "other_errors": n, "elapsed_s": x}; the first
error of each kind goes to stderr. Used by `cargo bench --bench scenarios` when
KEYRELAY_SDK_PYTHON is set.
"""

import asyncio
import json
import sys
import time

import openai
from openai import AsyncOpenAI


async def one(client: AsyncOpenAI, model: str) -> tuple[str, str]:
    try:
        await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Say hello"}],
            max_tokens=32,
        )
        return "ok", ""
    except openai.APIStatusError as error:
        kind = "status_429" if error.status_code == 429 else "other_errors"
        return kind, f"{error.status_code}: {error.message}"
    except Exception as error:  # noqa: BLE001 - every failure is counted, none may escape
        return "other_errors", repr(error)


async def main(base_url: str, model: str, count: int) -> None:
    client = AsyncOpenAI(base_url=base_url, api_key="burst", max_retries=0, timeout=600)
    started = time.monotonic()
    results = await asyncio.gather(*(one(client, model) for _ in range(count)))
    elapsed = time.monotonic() - started
    await client.close()
    counts = {"ok": 0, "status_429": 0, "other_errors": 0}
    first_error: dict[str, str] = {}
    for kind, detail in results:
        counts[kind] += 1
        if detail:
            first_error.setdefault(kind, detail)
    for kind, detail in first_error.items():
        print(f"first {kind}: {detail}", file=sys.stderr)
    print(json.dumps({**counts, "elapsed_s": round(elapsed, 3)}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
