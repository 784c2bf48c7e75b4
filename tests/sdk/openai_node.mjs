// The official `openai` Node package, unchanged, talking to keyrelay.
//
// Usage: node openai_node.mjs BASE_URL MODEL
// The package is resolved from $KEYRELAY_SDK_NODE_DIR (scripts/test.sh installs it into
// target/sdk-node), else from beside this script. Exits non-zero if any call fails.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { join } from "node:path";

const [baseURL, model] = process.argv.slice(2);
assert.ok(baseURL && model, "usage: node openai_node.mjs BASE_URL MODEL");
const dir = process.env.KEYRELAY_SDK_NODE_DIR;
const require = createRequire(dir ? join(dir, "package.json") : import.meta.url);
const { OpenAI } = require("openai");

const client = new OpenAI({ baseURL, apiKey: "anything", maxRetries: 0, timeout: 30_000 });
const messages = [{ role: "user", content: "Say hello" }];

const completion = await client.chat.completions.create({ model, messages, max_tokens: 16 });
const text = completion.choices[0]?.message?.content;
assert.ok(text, `empty non-streaming answer: ${JSON.stringify(completion)}`);
assert.ok(completion.usage?.total_tokens > 0, JSON.stringify(completion));

const pieces = [];
const stream = await client.chat.completions.create({ model, messages, max_tokens: 16, stream: true });
for await (const chunk of stream) {
  const piece = chunk.choices[0]?.delta?.content;
  if (piece) pieces.push(piece);
}
assert.ok(pieces.length > 1, `expected several streamed chunks, got ${pieces.length}`);
assert.ok(pieces.join(""), "empty streamed answer");

console.log(`openai-node ok: ${text.length} chars, ${pieces.length} chunks`);
