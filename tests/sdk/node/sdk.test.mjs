// The official `openai` npm client against a running llmop: only baseURL and key change.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { startGateway } from "./gateway.mjs";

let proc;
let client;

before(async () => {
  const gw = await startGateway();
  proc = gw.proc;
  client = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: "sk-anything", maxRetries: 0, timeout: 20000 });
});

after(() => proc?.kill("SIGTERM"));

const weatherTool = {
  type: "function",
  function: {
    name: "get_weather",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

test("the request id an SDK call returns leads to the call's record", async () => {
  const { data, response } = await client.chat.completions
    .create({ model: "chat", messages: [{ role: "user", content: "find me later" }] }, { headers: { "x-llmop-user": "node-user" } })
    .withResponse();
  const id = response.headers.get("x-request-id");
  assert.ok(id);
  let record;
  for (let i = 0; i < 100 && !record; i++) {
    const r = await fetch(`${client.baseURL}/requests/${id}`);
    if (r.status === 200) record = await r.json();
    else await new Promise((res) => setTimeout(res, 20));
  }
  assert.ok(record, "record committed");
  assert.equal(record.user, "node-user");
  assert.equal(record.route, "chat");
  assert.equal(record.output_text, data.choices[0].message.content);
  assert.equal(record.output_tokens, data.usage.completion_tokens);
  assert.equal(record.input_messages[0].content, "find me later");
});

test("chat completion", async () => {
  const { data, response } = await client.chat.completions
    .create({ model: "sim/echo", messages: [{ role: "user", content: "hello from node" }] })
    .withResponse();
  assert.ok(response.headers.get("x-request-id"));
  assert.equal(data.choices[0].message.content, "hello from node");
  assert.equal(data.usage.completion_tokens, 3);
});

test("streaming with usage", async () => {
  const stream = await client.chat.completions.create({
    model: "chat",
    messages: [{ role: "user", content: "node streams fine" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let usage;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    text += chunk.choices[0]?.delta?.content ?? "";
  }
  assert.equal(text, "node streams fine");
  assert.ok(usage.prompt_tokens > 0);
});

test("tool call round trip", async () => {
  const messages = [{ role: "user", content: "weather in Rome?" }];
  const first = await client.chat.completions.create({ model: "sim/echo", messages, tools: [weatherTool] });
  const call = first.choices[0].message.tool_calls[0];
  assert.equal(call.function.name, "get_weather");
  assert.equal(typeof JSON.parse(call.function.arguments).city, "string");
  messages.push(first.choices[0].message, { role: "tool", tool_call_id: call.id, content: "25C" });
  const second = await client.chat.completions.create({ model: "sim/echo", messages, tools: [weatherTool] });
  assert.equal(second.choices[0].message.content, "The tool returned: 25C");
});

test("json schema output", async () => {
  const resp = await client.chat.completions.create({
    model: "sim/echo",
    messages: [{ role: "user", content: "classify" }],
    response_format: {
      type: "json_schema",
      json_schema: {
        name: "label",
        strict: true,
        schema: { type: "object", properties: { label: { enum: ["bug", "feature"] } }, required: ["label"] },
      },
    },
  });
  const parsed = JSON.parse(resp.choices[0].message.content);
  assert.ok(["bug", "feature"].includes(parsed.label));
});

test("errors are typed", async () => {
  await assert.rejects(
    client.chat.completions.create({ model: "nowhere/x", messages: [{ role: "user", content: "x" }] }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === "model_not_found",
  );
  await assert.rejects(
    client.chat.completions.create({ model: "ratelimited/x", messages: [{ role: "user", content: "x" }] }),
    (e) => e instanceof OpenAI.RateLimitError,
  );
  await assert.rejects(
    client.chat.completions.create({ model: "sim/echo", messages: [] }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === "messages",
  );
});

test("responses: whole, streamed, a function call, and embeddings", async () => {
  const r = await client.responses.create({ model: "sim/echo", input: "hello from node", instructions: "brief" });
  assert.ok(r.id.startsWith("resp_"));
  assert.match(r.output_text, /hello from node/);
  assert.ok(r.usage.output_tokens > 0);

  const stream = await client.responses.create({ model: "sim/echo", input: "node stream", stream: true });
  let text = "";
  let completed;
  for await (const ev of stream) {
    if (ev.type === "response.output_text.delta") text += ev.delta;
    if (ev.type === "response.completed") completed = ev.response;
  }
  assert.equal(completed.output_text ?? completed.output[0].content[0].text, text);
  assert.match(text, /node stream/);

  const tool = {
    type: "function",
    name: "get_weather",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false },
    strict: true,
  };
  const first = await client.responses.create({ model: "sim/echo", input: "Weather?", tools: [tool] });
  const call = first.output.find((o) => o.type === "function_call");
  assert.equal(call.name, "get_weather");
  const second = await client.responses.create({
    model: "sim/echo",
    previous_response_id: first.id,
    input: [{ type: "function_call_output", call_id: call.call_id, output: "sunny" }],
    tools: [tool],
  });
  assert.match(second.output_text, /sunny/);

  const e = await client.embeddings.create({ model: "vectors", input: ["a", "b"], dimensions: 16 });
  assert.equal(e.data.length, 2);
  assert.equal(e.data[1].embedding.length, 16);
});
