// npm install openai
import OpenAI from "openai";

const client = new OpenAI({ baseURL: "http://127.0.0.1:8080/v1", apiKey: "anything" });
const messages = [{ role: "user", content: "Hello" }];

const reply = await client.chat.completions.create({ model: "llama-3.1-8b-instant", messages });
console.log(reply.choices[0].message.content);

const stream = await client.chat.completions.create({ model: "llama-3.1-8b-instant", messages, stream: true });
for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta?.content ?? "");
console.log();
