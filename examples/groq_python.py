# pip install groq
from groq import Groq

# No path: the Groq SDK appends /openai/v1 itself, and keyrelay serves that prefix too.
client = Groq(base_url="http://127.0.0.1:8080", api_key="anything")
messages = [{"role": "user", "content": "Hello"}]

reply = client.chat.completions.create(model="llama-3.1-8b-instant", messages=messages)
print(reply.choices[0].message.content)

for chunk in client.chat.completions.create(
    model="llama-3.1-8b-instant", messages=messages, stream=True
):
    print(chunk.choices[0].delta.content or "", end="", flush=True)
print()
