"""The official `openai` Python SDK, unchanged, talking to keyrelay.

Usage: python openai_python.py BASE_URL MODEL
Exits non-zero (with the SDK's exception) if any call fails.
"""

import sys

from openai import OpenAI


def main(base_url: str, model: str) -> None:
    client = OpenAI(base_url=base_url, api_key="anything", max_retries=0)
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
    assert "".join(pieces), "empty streamed answer"

    ids = [m.id for m in client.models.list()]
    assert model in ids, ids

    print(f"openai-python ok: {len(text)} chars, {len(pieces)} chunks, {len(ids)} models")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
