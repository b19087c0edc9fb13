// An OpenAI-compatible upstream on Node's own http server, for Sluice's
// conformance suite (e2e/conformance_test.go). Built-in modules only.
//
// Node's http server closes an idle keep-alive connection after 5 s
// (server.keepAliveTimeout, left at its default on purpose): a gateway that
// reuses such a connection after a pause sees it closed.
//
// Usage: node node_upstream.js            (listens on fd 3, a socket the test
//                                           opened, or on PORT from the env)
//
// What it answers:
//   POST /v1/chat/completions  stream and not
//   POST /v1/embeddings
//   GET  /_sent?id=ID          what it answered to the request whose
//                              X-Conformance-Id was ID: status, headers and
//                              the body before any compression (base64)
//
// Behaviours, chosen per request:
//   model name       the shape of real OpenAI-compatible servers:
//                    conf-openai, conf-vllm, conf-ollama, conf-azure,
//                    conf-anthropic, conf-gemini, conf-askusage (usage only
//                    when stream_options.include_usage asks for it)
//   X-Conformance-Error: STATUS   answer that error in the shape's form
//   X-Conformance-Transport: a comma list of
//     close     Connection: close after the answer
//     http10    an HTTP/1.0 answer, body ended by closing the connection
//     length    Content-Length body (default for non-stream answers)
//     chunked   chunked body
//     gzip, br  compress the body although the request did not ask for it
//     ping      SSE comments (": ping") between events
//     event     an `event:` line before every data line
//     crlf      SSE lines ended by CRLF
"use strict";

const http = require("http");
const zlib = require("zlib");
const crypto = require("crypto");

const SERVER = "node";
const CREATED = 1733300000;
const sent = new Map(); // conformance id -> record, bounded
const MAX_SENT = 4096;

function remember(id, rec) {
  if (!id) return;
  sent.set(id, rec);
  if (sent.size > MAX_SENT) sent.delete(sent.keys().next().value);
}

function words(s) {
  return String(s).split(/\s+/).filter(Boolean);
}

function contentText(c) {
  if (typeof c === "string") return c;
  if (Array.isArray(c)) return c.map((p) => (p && p.text) || "").join(" ");
  return "";
}

// Deterministic answer and usage from the request.
function answerFor(req) {
  const msgs = Array.isArray(req.messages) ? req.messages : [];
  let last = "";
  let promptTokens = 0;
  for (const m of msgs) {
    const t = contentText(m.content);
    promptTokens += words(t).length + 3;
    if (m.role === "user") last = t;
  }
  const text = "You said: " + last + ". This is " + SERVER + " answering as " + req.model + ".";
  const pieces = words(text).map((w, i) => (i === 0 ? w : " " + w));
  return { text, pieces, prompt: promptTokens, completion: pieces.length };
}

function hashID(prefix, s) {
  return prefix + crypto.createHash("sha256").update(s).digest("hex").slice(0, 24);
}

function usageOf(a, shape) {
  const u = { prompt_tokens: a.prompt, completion_tokens: a.completion, total_tokens: a.prompt + a.completion };
  if (shape === "vllm") {
    return { prompt_tokens: a.prompt, total_tokens: a.prompt + a.completion, completion_tokens: a.completion, prompt_tokens_details: null };
  }
  return u;
}

const filterOK = {
  hate: { filtered: false, severity: "safe" },
  self_harm: { filtered: false, severity: "safe" },
  sexual: { filtered: false, severity: "safe" },
  violence: { filtered: false, severity: "safe" },
};

function chatBody(shape, model, id, a) {
  switch (shape) {
    case "vllm":
      return {
        id, object: "chat.completion", created: CREATED, model,
        choices: [{ index: 0, message: { role: "assistant", reasoning_content: null, content: a.text, tool_calls: [] },
          logprobs: null, finish_reason: "stop", stop_reason: null }],
        usage: usageOf(a, shape), prompt_logprobs: null, kv_transfer_params: null,
      };
    case "ollama":
      return {
        id, object: "chat.completion", created: CREATED, model, system_fingerprint: "fp_ollama",
        choices: [{ index: 0, message: { role: "assistant", content: a.text }, finish_reason: "stop" }],
        usage: usageOf(a, shape),
      };
    case "azure":
      return {
        choices: [{ content_filter_results: filterOK, finish_reason: "stop", index: 0, logprobs: null,
          message: { content: a.text, refusal: null, role: "assistant" } }],
        created: CREATED, id, model, object: "chat.completion",
        prompt_filter_results: [{ prompt_index: 0, content_filter_results: filterOK }],
        system_fingerprint: "fp_azure", usage: usageOf(a, shape),
      };
    case "anthropic":
      return {
        id, choices: [{ finish_reason: "stop", index: 0, message: { content: a.text, role: "assistant" } }],
        created: CREATED, model, object: "chat.completion", usage: usageOf(a, shape),
      };
    case "gemini":
      return {
        choices: [{ finish_reason: "stop", index: 0, message: { content: a.text, role: "assistant" } }],
        created: CREATED, id, model, object: "chat.completion", usage: usageOf(a, shape),
      };
    default:
      return {
        id, object: "chat.completion", created: CREATED, model,
        choices: [{ index: 0, message: { role: "assistant", content: a.text, refusal: null, annotations: [] },
          logprobs: null, finish_reason: "stop" }],
        usage: usageOf(a, shape), service_tier: "default", system_fingerprint: "fp_conf",
      };
  }
}

// The chunks of a stream, as JSON objects, in the shape's order.
function chatChunks(shape, model, id, a, includeUsage) {
  const out = [];
  const base = (choices) => ({ id, object: "chat.completion.chunk", created: CREATED, model, choices });
  const n = a.pieces.length;
  switch (shape) {
    case "vllm":
      out.push(base([{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }]));
      a.pieces.forEach((p, i) => out.push(base([{ index: 0, delta: { content: p }, logprobs: null,
        finish_reason: i === n - 1 ? "stop" : null, ...(i === n - 1 ? { stop_reason: null } : {}) }])));
      if (includeUsage) out.push({ ...base([]), usage: usageOf(a, shape) });
      break;
    case "ollama":
      a.pieces.forEach((p) => out.push({ ...base([{ index: 0, delta: { role: "assistant", content: p }, finish_reason: null }]),
        system_fingerprint: "fp_ollama" }));
      out.push({ ...base([{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: "stop" }]), system_fingerprint: "fp_ollama" });
      if (includeUsage) out.push({ ...base([]), system_fingerprint: "fp_ollama", usage: usageOf(a, shape) });
      break;
    case "azure":
      // The first chunk answers for the prompt's content filter: no
      // choices, empty id and model.
      out.push({ choices: [], created: 0, id: "", model: "", object: "",
        prompt_filter_results: [{ prompt_index: 0, content_filter_results: filterOK }] });
      out.push({ choices: [{ content_filter_results: {}, delta: { content: "", refusal: null, role: "assistant" }, finish_reason: null, index: 0, logprobs: null }],
        created: CREATED, id, model, object: "chat.completion.chunk", system_fingerprint: "fp_azure" });
      a.pieces.forEach((p) => out.push({ choices: [{ content_filter_results: filterOK, delta: { content: p }, finish_reason: null, index: 0, logprobs: null }],
        created: CREATED, id, model, object: "chat.completion.chunk", system_fingerprint: "fp_azure" }));
      out.push({ choices: [{ content_filter_results: {}, delta: {}, finish_reason: "stop", index: 0, logprobs: null }],
        created: CREATED, id, model, object: "chat.completion.chunk", system_fingerprint: "fp_azure" });
      if (includeUsage) out.push({ choices: [], created: CREATED, id, model, object: "chat.completion.chunk", system_fingerprint: "fp_azure", usage: usageOf(a, shape) });
      break;
    case "gemini":
      // Usage rides on the last chunk, asked for or not.
      a.pieces.forEach((p, i) => {
        const c = { choices: [{ delta: { content: p, role: "assistant" }, index: 0, ...(i === n - 1 ? { finish_reason: "stop" } : {}) }],
          created: CREATED, id, model, object: "chat.completion.chunk" };
        if (i === n - 1) c.usage = usageOf(a, shape);
        out.push(c);
      });
      break;
    default: // openai, anthropic, askusage
      out.push(base([{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }]));
      a.pieces.forEach((p) => out.push(base([{ index: 0, delta: { content: p }, finish_reason: null }])));
      out.push(base([{ index: 0, delta: {}, finish_reason: "stop" }]));
      if (includeUsage) out.push({ ...base([]), usage: usageOf(a, shape) });
  }
  return out;
}

function errorFor(shape, status, model) {
  switch (shape) {
    case "vllm":
      return { object: "error", message: "The model `" + model + "` does not exist.", type: "NotFoundError", param: null, code: status };
    case "ollama":
      return { error: { message: 'model "' + model + '" not found, try pulling it first', type: status === 404 ? "not_found_error" : status === 400 ? "invalid_request_error" : "api_error", param: null, code: null } };
    case "gemini":
      return [{ error: { code: status, message: "Request contains an invalid argument.", status: status === 404 ? "NOT_FOUND" : "INVALID_ARGUMENT" } }];
    case "azure":
      return { error: { code: "DeploymentNotFound", message: "The API deployment for this resource does not exist.", param: null, type: null } };
    default:
      return { error: { message: "conformance error " + status + " from " + SERVER, type: "invalid_request_error", param: null, code: "conf_error" } };
  }
}

function embeddingBody(shape, model, input) {
  const inputs = Array.isArray(input) ? input : [input];
  let tokens = 0;
  const data = inputs.map((s, i) => {
    const w = words(typeof s === "string" ? s : JSON.stringify(s));
    tokens += w.length;
    const h = crypto.createHash("sha256").update(String(s)).digest();
    const emb = [];
    for (let k = 0; k < 8; k++) emb.push(Math.round(((h[k] - 128) / 128) * 1e6) / 1e6);
    return { object: "embedding", embedding: emb, index: i };
  });
  const usage = { prompt_tokens: tokens, total_tokens: tokens };
  if (shape === "vllm") {
    return { id: hashID("embd-", JSON.stringify(inputs)), object: "list", created: CREATED, model, data,
      usage: { prompt_tokens: tokens, total_tokens: tokens, completion_tokens: 0, prompt_tokens_details: null } };
  }
  return { object: "list", data, model, usage };
}

function parseTransport(h) {
  const t = new Set(String(h || "").split(",").map((s) => s.trim()).filter(Boolean));
  return t;
}

function shapeOf(model) {
  const m = /^conf-([a-z]+)/.exec(String(model || ""));
  return m ? m[1] : "openai";
}

// encodeEvent frames one SSE event with the chosen transport options.
function encodeEvent(data, t) {
  const nl = t.has("crlf") ? "\r\n" : "\n";
  let s = "";
  if (t.has("event")) s += "event: message" + nl;
  s += "data: " + data + nl + nl;
  return s;
}

// Writer hides how the answer goes out: through Node's response, or written
// raw on the socket (HTTP/1.0).
function makeWriter(req, res, t, status, headers, stream) {
  const enc = t.has("br") ? "br" : t.has("gzip") ? "gzip" : "";
  const h = { ...headers };
  if (enc) h["Content-Encoding"] = enc;
  if (t.has("close")) h["Connection"] = "close";
  let sink; // where compressed or plain bytes go
  let finish;
  if (t.has("http10")) {
    const sock = req.socket;
    let head = "HTTP/1.0 " + status + " " + (http.STATUS_CODES[status] || "") + "\r\n";
    for (const [k, v] of Object.entries(h)) head += k + ": " + v + "\r\n";
    head += "Connection: close\r\n\r\n";
    sock.write(head);
    sink = (b) => sock.write(b);
    finish = () => sock.end();
  } else {
    res.statusCode = status;
    for (const [k, v] of Object.entries(h)) res.setHeader(k, v);
    if (stream || t.has("chunked")) {
      sink = (b) => res.write(b);
      finish = () => res.end();
    } else {
      // Content-Length: the whole (possibly compressed) body at once.
      const parts = [];
      sink = (b) => parts.push(Buffer.from(b));
      finish = () => {
        const body = Buffer.concat(parts);
        res.setHeader("Content-Length", body.length);
        res.end(body);
      };
    }
  }
  if (!enc) return { write: sink, end: finish };
  const z = enc === "br" ? zlib.createBrotliCompress() : zlib.createGzip();
  z.on("data", (b) => sink(b));
  z.on("end", () => finish());
  const flushKind = enc === "br" ? zlib.constants.BROTLI_OPERATION_FLUSH : zlib.constants.Z_SYNC_FLUSH;
  return {
    write: (b) => { z.write(b); if (stream) z.flush(flushKind); },
    end: () => z.end(),
  };
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function handle(req, res, raw) {
  const url = new URL(req.url, "http://x");
  if (req.method === "GET" && url.pathname === "/_sent") {
    const rec = sent.get(url.searchParams.get("id"));
    if (!rec) { res.statusCode = 404; res.end("{}"); return; }
    res.setHeader("Content-Type", "application/json");
    res.end(JSON.stringify(rec));
    return;
  }
  if (req.method === "GET" && url.pathname === "/_health") { res.end("ok"); return; }
  let body = {};
  try { body = JSON.parse(raw.toString("utf8") || "{}"); } catch (e) { body = {}; }
  const id = req.headers["x-conformance-id"] || "";
  const t = parseTransport(req.headers["x-conformance-transport"]);
  const shape = shapeOf(body.model);
  const rec = { server: SERVER, path: url.pathname, request_headers: req.headers, request_body: raw.toString("base64") };
  const headers = { "Content-Type": "application/json" };
  if (shape === "anthropic") headers["request-id"] = hashID("req_", id || String(Math.random()));

  let status = 200;
  let payload; // string for JSON answers; array of events for streams
  let stream = false;
  const errHeader = req.headers["x-conformance-error"];
  if (errHeader) {
    status = parseInt(errHeader, 10) || 400;
    payload = JSON.stringify(errorFor(shape, status, body.model));
  } else if (shape === "anthropic" && body.n !== undefined && body.n !== 1) {
    status = 400;
    payload = JSON.stringify({ error: { message: "n: only n=1 is supported", type: "invalid_request_error", param: null, code: null } });
  } else if (url.pathname === "/v1/chat/completions") {
    const a = answerFor(body);
    const cid = (shape === "anthropic" ? "msg_" : "chatcmpl-") + crypto.createHash("sha256").update(raw).digest("hex").slice(0, 24);
    if (body.stream) {
      stream = true;
      const so = body.stream_options || {};
      const includeUsage = so.include_usage === true;
      const chunks = chatChunks(shape, body.model, cid, a, includeUsage);
      payload = [];
      if (t.has("ping")) payload.push(": ping" + (t.has("crlf") ? "\r\n\r\n" : "\n\n"));
      for (const c of chunks) {
        payload.push(encodeEvent(JSON.stringify(c), t));
        if (t.has("ping")) payload.push(": ping - 2024-12-04 15:00:00.000000+00:00" + (t.has("crlf") ? "\r\n\r\n" : "\n\n"));
      }
      payload.push(encodeEvent("[DONE]", t));
      headers["Content-Type"] = "text/event-stream; charset=utf-8";
      headers["Cache-Control"] = "no-cache";
    } else {
      payload = JSON.stringify(chatBody(shape, body.model, cid, a));
    }
  } else if (url.pathname === "/v1/embeddings") {
    payload = JSON.stringify(embeddingBody(shape, body.model, body.input));
  } else {
    status = 404;
    payload = JSON.stringify(errorFor("openai", 404, body.model));
  }

  const w = makeWriter(req, res, t, status, headers, stream);
  const plain = stream ? payload.join("") : payload;
  remember(id, { ...rec, status, response_headers: headers, body: Buffer.from(plain, "utf8").toString("base64") });
  if (stream) {
    for (const ev of payload) {
      w.write(ev);
      await sleep(1);
    }
  } else {
    w.write(payload);
  }
  w.end();
}

const server = http.createServer((req, res) => {
  const parts = [];
  req.on("data", (c) => parts.push(c));
  req.on("end", () => {
    handle(req, res, Buffer.concat(parts)).catch((e) => {
      try { res.statusCode = 500; res.end(JSON.stringify({ error: { message: String(e), type: "server_error" } })); } catch (_) { /* gone */ }
    });
  });
});
// keepAliveTimeout stays at Node's default (5 s): that is the point.
if (process.env.PORT) {
  server.listen(Number(process.env.PORT), "127.0.0.1", () => console.log("listening " + server.address().port));
} else {
  server.listen({ fd: 3 }, () => console.log("listening fd 3"));
}
process.on("SIGTERM", () => process.exit(0));
