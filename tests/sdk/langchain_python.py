"""LangChain's `ChatOpenAI` (`langchain-openai`), unchanged, talking to keyrelay.

Usage: python langchain_python.py BASE_URL MODEL
Exits non-zero (with the exception) if any call fails. LangSmith tracing is forced off so nothing
leaves the machine.
"""

import os
import sys

for name in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING"):
    os.environ[name] = "false"

from langchain_openai import ChatOpenAI  # noqa: E402


def main(base_url: str, model: str) -> None:
    llm = ChatOpenAI(
        base_url=base_url, api_key="anything", model=model, max_tokens=16, max_retries=0, timeout=30
    )

    message = llm.invoke("Say hello")
    text = message.content
    assert isinstance(text, str) and text, f"empty non-streaming answer: {message!r}"

    pieces = [chunk.content for chunk in llm.stream("Say hello") if chunk.content]
    assert len(pieces) > 1, f"expected several streamed chunks, got {pieces}"
    assert "".join(pieces), "empty streamed answer"

    print(f"langchain-python ok: {len(text)} chars, {len(pieces)} chunks")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
