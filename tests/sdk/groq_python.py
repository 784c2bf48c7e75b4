"""The official `groq` Python SDK, unchanged, talking to keyrelay.

Usage: python groq_python.py ROOT_URL MODEL
ROOT_URL is keyrelay without a path (http://127.0.0.1:PORT): the SDK appends `/openai/v1` itself.
Exits non-zero (with the SDK's exception) if any call fails.
"""

import sys

from groq import Groq


def main(root_url: str, model: str) -> None:
    client = Groq(base_url=root_url, api_key="anything", max_retries=0, timeout=30)
    messages = [{"role": "user", "content": "Say hello"}]

    completion = client.chat.completions.create(model=model, messages=messages, max_tokens=16)
    text = completion.choices[0].message.content
    assert text, f"empty non-streaming answer: {completion}"
    assert completion.usage and completion.usage.total_tokens > 0, completion

    pieces = []
    for chunk in client.chat.completions.create(
        model=model, messages=messages, max_tokens=16, stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    assert len(pieces) > 1, f"expected several streamed chunks, got {pieces}"
    assert "".join(pieces), "empty streamed answer"

    print(f"groq-python ok: {len(text)} chars, {len(pieces)} chunks")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
