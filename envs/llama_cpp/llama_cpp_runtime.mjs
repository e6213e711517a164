// llama.cpp on a GGUF file, asked in JSON on stdin, answering in JSON on stdout (tests/test_gguf.py,
// benchmarks/gguf_decode.py):
//
//   echo '{"model": "results/export/sft_model-f16.gguf", "tokenize": ["你好 123"]}' | node envs/llama_cpp/llama_cpp_runtime.mjs
//
// Keys: tokenize [text] -> token ids (special-token text parsed, as Hugging Face does); logits
// [[ids]] -> the last position's logits; greedy {prompts: [[ids]], tokens} -> each continuation
// up to an end-of-generation token; chat {messages, max_tokens} -> the reply through the file's
// chat template and why it stopped; decode {prompts: [[ids]], tokens} -> each prompt's greedy decoding of
// exactly `tokens` tokens (past any end token) and its seconds.
import {getLlama, LlamaChatSession} from "node-llama-cpp";

const request = JSON.parse(await new Promise((resolve) => {
  let text = "";
  process.stdin.on("data", (chunk) => (text += chunk)).on("end", () => resolve(text));
}));
// Prebuilt CPU binaries only: building llama.cpp from source would take minutes.
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath: request.model});
const context = await model.createContext({contextSize: request.context_size ?? 256, threads: request.threads ?? 0});
const sequence = context.getSequence();
const answer = {};

async function lastLogits(ids) {
  await sequence.clearHistory();
  const items = ids.map((id, n) => (n === ids.length - 1 ? [id, {generateNext: {logits: true}}] : id));
  const logits = (await sequence.controlledEvaluate(items))[ids.length - 1].next.logits;
  return Array.from({length: model.tokens.vocabularySize ?? logits.size}, (_, id) => logits.get(id));
}

async function greedy(ids, tokens, stopAtEnd = true) {
  await sequence.clearHistory();
  const out = [];
  for await (const token of sequence.evaluate(ids, {temperature: 0, yieldEogToken: true})) {
    out.push(token);
    if ((stopAtEnd && model.isEogToken(token)) || out.length >= tokens) break;
  }
  return out;
}

async function chat(messages, maxTokens) {
  await sequence.clearHistory();
  const session = new LlamaChatSession({contextSequence: sequence, autoDisposeSequence: false});
  session.setChatHistory(messages.slice(0, -1).map((m) => (m.role === "user" ? {type: "user", text: m.content}
    : m.role === "system" ? {type: "system", text: m.content} : {type: "model", response: [m.content]})));
  const reply = await session.promptWithMeta(messages.at(-1).content, {maxTokens, temperature: 0});
  const wrapper = session.chatWrapper.wrapperName;
  session.dispose();
  return {text: reply.responseText, stop_reason: reply.stopReason, wrapper};
}

async function decodeSpeed(ids, tokens) {
  const started = performance.now();
  const out = await greedy(ids, tokens, false);
  return {tokens: out.length, seconds: (performance.now() - started) / 1000};
}

if (request.tokenize) answer.tokenize = request.tokenize.map((text) => model.tokenize(text, true));
if (request.logits) {
  answer.logits = [];
  for (const ids of request.logits) answer.logits.push(await lastLogits(ids));
}
if (request.greedy) {
  answer.greedy = [];
  for (const ids of request.greedy.prompts) answer.greedy.push(await greedy(ids, request.greedy.tokens));
}
if (request.chat) answer.chat = await chat(request.chat.messages, request.chat.max_tokens);
if (request.decode) {
  answer.decode = [];
  for (const ids of request.decode.prompts) answer.decode.push(await decodeSpeed(ids, request.decode.tokens));
}
process.stdout.write(JSON.stringify(answer));
await context.dispose();
await model.dispose();
await llama.dispose();
