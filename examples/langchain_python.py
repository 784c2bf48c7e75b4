# pip install langchain-openai
from langchain_openai import ChatOpenAI

llm = ChatOpenAI(
    base_url="http://127.0.0.1:8080/v1", api_key="anything", model="llama-3.1-8b-instant"
)

print(llm.invoke("Hello").content)

for chunk in llm.stream("Hello"):
    print(chunk.content, end="", flush=True)
print()
