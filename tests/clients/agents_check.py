"""What agents send, through the official clients unmodified, against SmolLM2-135M-Instruct:
openai's chat with tools (forced, named, streamed, auto), `chat.completions.parse` with a pydantic
model, `responses.create` and `responses.parse` (whole, streamed, with tools), and anthropic's
`messages.create` / `messages.stream` / `messages.parse` with tool use and `count_tokens` (the
anthropic client no longer has a `temperature` argument: greedy answers ask for it in
`extra_body`, which the API still takes). Every constrained answer
must validate with jsonschema: a 135M model left alone rarely writes JSON that does."""
import json
import sys

import anthropic
import jsonschema
import openai
from openai import OpenAI
from pydantic import BaseModel

addr, model = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=f"http://{addr}/v1", api_key="unused", max_retries=0, timeout=180)
claude = anthropic.Anthropic(base_url=f"http://{addr}", api_key="unused", max_retries=0, timeout=180)

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 40}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 40}}, "required": ["timezone"],
        "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Current time in a timezone", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def check_call(name, arguments):
    assert name in SCHEMAS, name
    jsonschema.validate(json.loads(arguments), SCHEMAS[name])


# Forced: `required` returns at least one call to an offered tool with valid arguments.
r = client.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=96)
calls = r.choices[0].message.tool_calls
assert calls and r.choices[0].finish_reason == "tool_calls", r
for c in calls:
    assert c.type == "function" and c.id.startswith("call_"), c
    check_call(c.function.name, c.function.arguments)

# A named tool, sampled: still valid arguments for that tool.
for seed in range(3):
    r = client.chat.completions.create(model=model, messages=ASK, tools=TOOLS, temperature=0.8, seed=seed, max_tokens=96,
                                       tool_choice={"type": "function", "function": {"name": "get_time"}})
    [c] = r.choices[0].message.tool_calls
    assert c.function.name == "get_time", c
    check_call("get_time", c.function.arguments)

# Streamed: tool_calls deltas (id and name first, then argument pieces) add up to a valid call,
# and no markup leaks into content.
stream = client.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice="required", temperature=0,
                                        max_tokens=96, stream=True, parallel_tool_calls=False)
calls, content, finish = {}, "", None
for chunk in stream:
    for ch in chunk.choices:
        content += ch.delta.content or ""
        finish = ch.finish_reason or finish
        for d in ch.delta.tool_calls or []:
            call = calls.setdefault(d.index, {"id": None, "name": None, "arguments": ""})
            call["id"] = d.id or call["id"]
            call["name"] = (d.function and d.function.name) or call["name"]
            call["arguments"] += (d.function and d.function.arguments) or ""
assert len(calls) == 1 and finish == "tool_calls" and content == "", (calls, content, finish)
check_call(calls[0]["name"], calls[0]["arguments"])

# Auto: the model may answer or call; either way the answer is well formed, and a conversation
# carrying a call and its result goes through the template.
r = client.chat.completions.create(model=model, messages=ASK, tools=TOOLS, temperature=0, max_tokens=64)
m = r.choices[0].message
assert (m.content is not None) or m.tool_calls, r
for c in m.tool_calls or []:
    check_call(c.function.name, c.function.arguments)
history = ASK + [
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "unit": "celsius"})}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees and sunny"},
]
r = client.chat.completions.create(model=model, messages=history, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=32)
assert r.choices[0].message.content, r


# Structured outputs with a pydantic model: parsed, and valid against its own schema.
class City(BaseModel):
    name: str
    country: str
    population: int


r = client.chat.completions.parse(model=model, messages=[{"role": "user", "content": "Describe Paris as JSON."}],
                                  response_format=City, temperature=0, max_tokens=96)
city = r.choices[0].message.parsed
assert isinstance(city, City), r
jsonschema.validate(json.loads(r.choices[0].message.content), City.model_json_schema())
r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Give me a JSON object about cats."}],
                                   response_format={"type": "json_object"}, temperature=0, max_tokens=64)
assert r.choices[0].finish_reason == "length" or isinstance(json.loads(r.choices[0].message.content), dict), r
try:
    client.chat.completions.create(model=model, messages=ASK, max_tokens=8, response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "unevaluatedItems": False}}})
    raise AssertionError("a schema keyword that cannot be enforced must be refused")
except openai.BadRequestError as e:
    assert "unevaluatedItems" in str(e), e

# Responses: plain, parsed into a pydantic model, streamed, and with a forced tool.
r = client.responses.create(model=model, input="Which city is the capital of France?", temperature=0, max_output_tokens=24)
assert r.status in ("completed", "incomplete") and "Paris" in r.output_text, r
r = client.responses.parse(model=model, input="Describe Paris as JSON.", text_format=City, temperature=0, max_output_tokens=96)
assert isinstance(r.output_parsed, City), r
jsonschema.validate(json.loads(r.output_text), City.model_json_schema())
text, kinds = "", []
with client.responses.stream(model=model, input="Which city is the capital of France?", temperature=0, max_output_tokens=24) as s:
    for event in s:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
    final = s.get_final_response()
assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete"), kinds
assert text == final.output_text and "Paris" in text, (text, final)
r = client.responses.create(model=model, input=ASK, tools=[{"type": "function", **t["function"]} for t in TOOLS],
                            tool_choice="required", temperature=0, max_output_tokens=96)
calls = [o for o in r.output if o.type == "function_call"]
assert calls, r
for c in calls:
    check_call(c.name, c.arguments)
try:
    client.responses.create(model=model, input="hi", previous_response_id="resp_1")
    raise AssertionError("previous_response_id must be refused: nothing is stored")
except openai.BadRequestError as e:
    assert "previous_response_id" in str(e), e

# Anthropic Messages: text, streamed text, a forced tool use, a tool result, structured output,
# counted tokens.
GREEDY = {"temperature": 0}
m = claude.messages.create(model=model, max_tokens=24, extra_body=GREEDY,
                           messages=[{"role": "user", "content": "Which city is the capital of France?"}])
assert m.type == "message" and m.role == "assistant" and "Paris" in m.content[0].text, m
assert m.stop_reason in ("end_turn", "max_tokens") and m.usage.input_tokens > 0 and m.usage.output_tokens > 0, m
with claude.messages.stream(model=model, max_tokens=24, extra_body=GREEDY,
                            messages=[{"role": "user", "content": "Which city is the capital of France?"}]) as s:
    streamed = "".join(s.text_stream)
    final = s.get_final_message()
assert streamed == m.content[0].text == final.content[0].text, (streamed, m, final)
m = claude.messages.create(model=model, max_tokens=24, extra_body=GREEDY, stop_sequences=["Paris"],
                           messages=[{"role": "user", "content": "Which city is the capital of France?"}])
assert m.stop_reason == "stop_sequence" and m.stop_sequence == "Paris", m
ctools = [{"name": t["function"]["name"], "description": t["function"]["description"], "input_schema": t["function"]["parameters"]} for t in TOOLS]
m = claude.messages.create(model=model, max_tokens=96, extra_body=GREEDY, tools=ctools, tool_choice={"type": "any"},
                           messages=[{"role": "user", "content": "What is the weather like in Paris today?"}])
uses = [b for b in m.content if b.type == "tool_use"]
assert uses and m.stop_reason == "tool_use", m
for u in uses:
    assert u.id.startswith("toolu_"), u
    jsonschema.validate(u.input, SCHEMAS[u.name])
with claude.messages.stream(model=model, max_tokens=96, extra_body=GREEDY, tools=ctools,
                            tool_choice={"type": "tool", "name": "get_weather"},
                            messages=[{"role": "user", "content": "Weather in Oslo?"}]) as s:
    final = s.get_final_message()
[u] = [b for b in final.content if b.type == "tool_use"]
assert u.name == "get_weather" and final.stop_reason == "tool_use", final
jsonschema.validate(u.input, WEATHER)
m = claude.messages.create(model=model, max_tokens=24, extra_body=GREEDY, tools=ctools, messages=[
    {"role": "user", "content": "What is the weather like in Paris today?"},
    {"role": "assistant", "content": [{"type": "tool_use", "id": u.id, "name": "get_weather", "input": {"city": "Paris", "unit": "celsius"}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": u.id, "content": "18 degrees and sunny"}]},
])
assert m.content, m
p = claude.messages.parse(model=model, max_tokens=96, extra_body=GREEDY, output_format=City,
                          messages=[{"role": "user", "content": "Describe Paris as JSON."}])
assert isinstance(p.parsed_output, City), p
jsonschema.validate(json.loads(p.content[0].text), City.model_json_schema())
n = claude.messages.count_tokens(model=model, messages=[{"role": "user", "content": "Which city is the capital of France?"}])
assert n.input_tokens == 38, n
try:
    claude.messages.create(model=model, max_tokens=8, messages=[{"role": "system", "content": "x"}])
    raise AssertionError("a bad role must be refused")
except anthropic.BadRequestError as e:
    assert e.body["type"] == "error" and e.body["error"]["type"] == "invalid_request_error", e.body
print("agents check passed")
