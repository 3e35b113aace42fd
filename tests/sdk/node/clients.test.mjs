// A third-party client against the real binary: the Vercel AI SDK (`ai` with
// `@ai-sdk/openai` and `@ai-sdk/anthropic`), on the chat and the responses models of
// `@ai-sdk/openai` and on the Anthropic provider: generateText, streamText, a tool the
// SDK runs between steps, and generateObject.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { generateText, streamText, generateObject, tool, stepCountIs } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { createAnthropic } from "@ai-sdk/anthropic";
import { z } from "zod";
import { startGateway } from "./gateway.mjs";

let proc;
const models = {};

before(async () => {
  const gw = await startGateway();
  proc = gw.proc;
  const openai = createOpenAI({ baseURL: `${gw.url}/v1`, apiKey: "sk-anything" });
  // @ai-sdk/anthropic appends `/messages`: its base URL ends in `/v1`.
  const anthropic = createAnthropic({ baseURL: `${gw.url}/v1`, apiKey: "sk-anything" });
  models.responses = openai.responses("sim/echo");
  models.chat = openai.chat("sim/echo");
  models.anthropic = anthropic("sim/echo");
});

after(() => proc?.kill("SIGTERM"));

const weather = tool({
  description: "Weather in a city",
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => `rainy in ${city}`,
});

for (const name of ["responses", "chat", "anthropic"]) {
  test(`vercel ai sdk (${name}): generateText`, async () => {
    const r = await generateText({ model: models[name], prompt: "hello vercel", maxRetries: 0 });
    assert.match(r.text, /hello vercel/);
    assert.ok(r.usage.inputTokens > 0 && r.usage.outputTokens > 0);
  });

  test(`vercel ai sdk (${name}): streamText`, async () => {
    const r = streamText({ model: models[name], prompt: "stream vercel", maxRetries: 0 });
    let text = "";
    for await (const delta of r.textStream) text += delta;
    assert.match(text, /stream vercel/);
    assert.equal(await r.text, text);
  });

  test(`vercel ai sdk (${name}): a tool run between steps`, async () => {
    const r = await generateText({
      model: models[name],
      prompt: "What is the weather?",
      tools: { weather },
      stopWhen: stepCountIs(3),
      maxRetries: 0,
    });
    assert.equal(r.steps[0].toolCalls[0].toolName, "weather");
    assert.match(r.text, /rainy in/);
  });

  test(`vercel ai sdk (${name}): generateObject`, async () => {
    const r = await generateObject({
      model: models[name],
      schema: z.object({ title: z.string(), priority: z.number().int() }),
      prompt: "file a ticket",
      maxRetries: 0,
    });
    assert.equal(typeof r.object.title, "string");
    assert.ok(Number.isInteger(r.object.priority));
  });
}
