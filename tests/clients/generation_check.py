"""The official openai client, unmodified, against aiserve's text generation: chat whole and
streamed (with usage), legacy completions, n choices, stop strings, log-probabilities, errors, and 8 concurrent
greedy chats that must answer exactly as each does alone (continuous batching is invisible)."""
import sys
from concurrent.futures import ThreadPoolExecutor

import openai
from openai import OpenAI

addr, model = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=f"http://{addr}/v1", api_key="unused", max_retries=0, timeout=120)


def ask(q, **kw):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": q}], temperature=0, max_tokens=48, **kw)
    return r


r = ask("Which city is the capital of France?")
assert r.choices[0].message.content == "The capital of France is Paris.", r
assert r.choices[0].finish_reason == "stop" and r.usage.prompt_tokens == 38 and r.usage.completion_tokens == 8, r
assert "4" in ask("What is 2 + 2?").choices[0].message.content

stream = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Which city is the capital of France?"}], temperature=0,
    stream=True, stream_options={"include_usage": True})
pieces, finish, usage = [], None, None
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        pieces.append(c.delta.content or "")
        finish = c.finish_reason or finish
assert "".join(pieces) == "The capital of France is Paris." and finish == "stop", (pieces, finish)
assert usage.completion_tokens == 8 and usage.total_tokens == 46, usage

c = client.completions.create(model=model, prompt="The capital of France is", max_tokens=6, temperature=0)
assert c.choices[0].text.startswith(" Paris"), c
assert c.choices[0].finish_reason == "length" and c.usage.completion_tokens == 6, c
c = client.completions.create(model=model, prompt="The capital of France is", max_tokens=20, temperature=0, stop=["."])
assert c.choices[0].text == " Paris" and c.choices[0].finish_reason == "stop", c

r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Tell me a joke."}], n=2,
                                   temperature=0.9, seed=42, max_tokens=16)
again = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Tell me a joke."}], n=2,
                                       temperature=0.9, seed=42, max_tokens=16)
assert len(r.choices) == 2 and [x.message.content for x in r.choices] == [x.message.content for x in again.choices]

# Log-probabilities: one entry per answer token, its text the answer, the greedy pick the most likely.
r = ask("Which city is the capital of France?", logprobs=True, top_logprobs=3)
content = r.choices[0].logprobs.content
assert "".join(t.token for t in content) == "The capital of France is Paris.", content
assert all(t.logprob <= 0 and len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token for t in content), content
c = client.completions.create(model=model, prompt="The capital of France is", max_tokens=3, temperature=0, logprobs=2)
assert "".join(c.choices[0].logprobs.tokens) == c.choices[0].text and len(c.choices[0].logprobs.top_logprobs[0]) == 2, c

try:
    ask("hi", top_p=0)
    raise AssertionError("top_p=0 accepted")
except openai.BadRequestError as e:
    assert e.body["param"] == "top_p", e.body

assert model in [m.id for m in client.models.list().data]

questions = ["Which city is the capital of France?", "What is 2 + 2?", "Name three colors.", "Who wrote Hamlet?",
             "Say hello in Spanish.", "What is the boiling point of water?", "Write a haiku about the sea.",
             "List the days of the week."]
alone = [ask(q).choices[0].message.content for q in questions]
with ThreadPoolExecutor(8) as pool:
    together = list(pool.map(lambda q: ask(q).choices[0].message.content, questions))
assert alone == together, list(zip(alone, together))
print(f"openai client generation OK ({len(questions)} concurrent greedy chats identical to sequential)")
