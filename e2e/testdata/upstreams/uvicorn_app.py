"""An OpenAI-compatible upstream as a plain ASGI app, for Sluice's
conformance suite (e2e/conformance_test.go).

Served by Debian's python3-uvicorn with its defaults, as vLLM serves:

    /usr/bin/python3 -m uvicorn --app-dir e2e/testdata/upstreams uvicorn_app:app \
        --fd 3 --timeout-keep-alive 5

uvicorn closes an idle keep-alive connection after timeout_keep_alive (5 s,
its default and vLLM's). Standard library only besides uvicorn.

What it answers (the same contract as node_upstream.js):
  POST /v1/chat/completions   stream and not
  POST /v1/embeddings
  GET  /_sent?id=ID           what it answered to the request whose
                              X-Conformance-Id was ID (body base64, before
                              any compression)

Behaviours, chosen per request:
  model name   conf-openai (default) or conf-vllm: vLLM's extra fields, its
               usage chunk (choices: []) only when
               stream_options.include_usage asks, and its error body
               {"object":"error",...}
  X-Conformance-Error: STATUS      answer that error
  X-Conformance-Transport: close, length, chunked, gzip (comma list)
"""

import asyncio
import base64
import collections
import gzip
import hashlib
import json
import re
import zlib

SERVER = "uvicorn"
CREATED = 1733300000
MAX_SENT = 4096
_sent = collections.OrderedDict()


def _remember(cid, rec):
    if not cid:
        return
    _sent[cid] = rec
    while len(_sent) > MAX_SENT:
        _sent.popitem(last=False)


def _words(s):
    return [w for w in re.split(r"\s+", str(s)) if w]


def _content_text(c):
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        return " ".join((p or {}).get("text", "") for p in c if isinstance(p, dict))
    return ""


def _answer(req):
    last, prompt = "", 0
    for m in req.get("messages") or []:
        t = _content_text(m.get("content"))
        prompt += len(_words(t)) + 3
        if m.get("role") == "user":
            last = t
    text = "You said: %s. This is %s answering as %s." % (last, SERVER, req.get("model"))
    pieces = [w if i == 0 else " " + w for i, w in enumerate(_words(text))]
    return text, pieces, prompt, len(pieces)


def _dumps(o):
    return json.dumps(o, separators=(",", ":"), ensure_ascii=False)


def _usage(shape, p, c):
    if shape == "vllm":
        return {"prompt_tokens": p, "total_tokens": p + c, "completion_tokens": c, "prompt_tokens_details": None}
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _chat(shape, model, cid, text, p, c):
    if shape == "vllm":
        return {
            "id": cid, "object": "chat.completion", "created": CREATED, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "reasoning_content": None, "content": text,
                                                 "tool_calls": []},
                         "logprobs": None, "finish_reason": "stop", "stop_reason": None}],
            "usage": _usage(shape, p, c), "prompt_logprobs": None, "kv_transfer_params": None,
        }
    return {
        "id": cid, "object": "chat.completion", "created": CREATED, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": _usage(shape, p, c), "system_fingerprint": "fp_conf",
    }


def _chunks(shape, model, cid, pieces, p, c, include_usage):
    def base(choices):
        return {"id": cid, "object": "chat.completion.chunk", "created": CREATED, "model": model, "choices": choices}

    out = [base([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}])]
    n = len(pieces)
    for i, piece in enumerate(pieces):
        ch = {"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": "stop" if i == n - 1 else None}
        if shape == "vllm" and i == n - 1:
            ch["stop_reason"] = None
        out.append(base([ch]))
    if include_usage:
        u = base([])
        u["usage"] = _usage(shape, p, c)
        out.append(u)
    return out


def _error(shape, status, model):
    if shape == "vllm":
        return {"object": "error", "message": "The model `%s` does not exist." % model, "type": "NotFoundError",
                "param": None, "code": status}
    return {"error": {"message": "conformance error %d from %s" % (status, SERVER), "type": "invalid_request_error",
                      "param": None, "code": "conf_error"}}


def _embeddings(shape, model, inp):
    inputs = inp if isinstance(inp, list) else [inp]
    data, tokens = [], 0
    for i, s in enumerate(inputs):
        tokens += len(_words(s if isinstance(s, str) else _dumps(s)))
        h = hashlib.sha256(str(s).encode()).digest()
        data.append({"object": "embedding", "embedding": [round((h[k] - 128) / 128, 6) for k in range(8)], "index": i})
    if shape == "vllm":
        return {"id": "embd-" + hashlib.sha256(_dumps(inputs).encode()).hexdigest()[:24], "object": "list",
                "created": CREATED, "model": model, "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0,
                          "prompt_tokens_details": None}}
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


async def _read_body(receive):
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return body


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    path = scope["path"]
    raw = await _read_body(receive)

    if scope["method"] == "GET" and path == "/_sent":
        q = dict(kv.split("=", 1) for kv in scope["query_string"].decode().split("&") if "=" in kv)
        rec = _sent.get(q.get("id", ""))
        body = _dumps(rec).encode() if rec else b"{}"
        await send({"type": "http.response.start", "status": 200 if rec else 404,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return

    try:
        req = json.loads(raw or b"{}")
    except ValueError:
        req = {}
    if not isinstance(req, dict):
        req = {}
    cid = headers.get("x-conformance-id", "")
    transport = {t.strip() for t in headers.get("x-conformance-transport", "").split(",") if t.strip()}
    model = req.get("model") or ""
    m = re.match(r"conf-([a-z]+)", str(model))
    shape = m.group(1) if m else "openai"

    status, stream, payload = 200, False, None
    ctype = "application/json"
    if headers.get("x-conformance-error"):
        status = int(headers["x-conformance-error"])
        payload = _dumps(_error(shape, status, model))
    elif path == "/v1/chat/completions":
        text, pieces, p, c = _answer(req)
        ident = "chatcmpl-" + hashlib.sha256(raw).hexdigest()[:24]
        if req.get("stream"):
            stream = True
            include = (req.get("stream_options") or {}).get("include_usage") is True
            payload = ["data: " + _dumps(ch) + "\n\n" for ch in _chunks(shape, model, ident, pieces, p, c, include)]
            payload.append("data: [DONE]\n\n")
            ctype = "text/event-stream; charset=utf-8"
        else:
            payload = _dumps(_chat(shape, model, ident, text, p, c))
    elif path == "/v1/embeddings":
        payload = _dumps(_embeddings(shape, model, req.get("input")))
    else:
        status = 404
        payload = _dumps(_error("openai", 404, model))

    plain = "".join(payload) if stream else payload
    resp_headers = [(b"content-type", ctype.encode())]
    if "close" in transport:
        resp_headers.append((b"connection", b"close"))
    use_gzip = "gzip" in transport
    if use_gzip:
        resp_headers.append((b"content-encoding", b"gzip"))
    _remember(cid, {"server": SERVER, "path": path, "request_headers": headers,
                    "request_body": base64.b64encode(raw).decode(), "status": status,
                    "body": base64.b64encode(plain.encode()).decode()})

    if stream:
        await send({"type": "http.response.start", "status": status, "headers": resp_headers})
        z = zlib.compressobj(6, zlib.DEFLATED, 31) if use_gzip else None
        for ev in payload:
            b = ev.encode()
            if z:
                b = z.compress(b) + z.flush(zlib.Z_SYNC_FLUSH)
            await send({"type": "http.response.body", "body": b, "more_body": True})
            await asyncio.sleep(0.001)
        await send({"type": "http.response.body", "body": z.flush() if z else b""})
        return

    body = plain.encode()
    if use_gzip:
        body = gzip.compress(body)
    if "chunked" in transport:
        # No Content-Length: uvicorn sends the body chunked.
        await send({"type": "http.response.start", "status": status, "headers": resp_headers})
        half = len(body) // 2
        await send({"type": "http.response.body", "body": body[:half], "more_body": True})
        await send({"type": "http.response.body", "body": body[half:]})
        return
    resp_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": resp_headers})
    await send({"type": "http.response.body", "body": body})
