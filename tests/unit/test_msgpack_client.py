"""serve_app.client against a loopback HTTP server that speaks serve_app's msgpack stream."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgpack
import pytest

from serve_app.client import StreamError, stream_chunks, stream_text
from serve_app.api.framing import MSGPACK_DONE, encode


def _chat(text: str, finish_reason: str | None = None) -> dict:
    choice = {"index": 0, "delta": {"content": text}}
    if finish_reason:
        choice["finish_reason"] = finish_reason
    return {"id": "r", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]}


def _completion(text: str) -> dict:
    return {"id": "r", "object": "text_completion", "created": 1, "model": "m", "choices": [{"index": 0, "text": text}]}


class _Handler(BaseHTTPRequestHandler):
    frames: list[bytes] = []
    status = 200
    seen: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.seen.append({"path": self.path, "accept": self.headers["Accept"], "body": body})
        self.send_response(self.status)
        if self.status != 200:
            payload = json.dumps({"error": {"message": "bad model", "type": "invalid_request_error"}}).encode()
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_header("Content-Type", "application/x-msgpack")
        self.end_headers()
        for frame in self.frames:  # one write per frame, like the ingress relaying frames
            self.wfile.write(frame)
            self.wfile.flush()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.seen.clear()
    _Handler.status = 200
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_reads_text_pieces_in_order_and_asks_for_msgpack(server):
    _Handler.frames = [encode(_chat("Pa"), "msgpack"), encode(_chat("ris ü"), "msgpack"),
                       encode(_chat("", finish_reason="stop"), "msgpack"), MSGPACK_DONE]
    body = {"model": "m", "messages": [{"role": "user", "content": "Capital?"}]}
    assert "".join(stream_text(server + "/v1", body)) == "Paris ü"
    seen = _Handler.seen[-1]
    assert seen["path"] == "/v1/chat/completions" and seen["accept"] == "application/x-msgpack"
    assert seen["body"]["stream"] is True


def test_error_event_and_missing_done_marker_raise(server):
    _Handler.frames = [encode(_completion("a"), "msgpack"),
                       msgpack.packb({"error": {"message": "engine died", "type": "server_error"}})]
    with pytest.raises(StreamError, match="engine died"):
        list(stream_chunks(server, {"model": "m", "prompt": "x"}))
    _Handler.frames = [encode(_completion("a"), "msgpack")]
    with pytest.raises(StreamError, match="done marker"):
        list(stream_chunks(server, {"model": "m", "prompt": "x"}))


def test_http_error_carries_the_openai_error(server):
    _Handler.status = 404
    with pytest.raises(StreamError) as info:
        list(stream_chunks(server, {"model": "nope", "prompt": "x"}))
    assert info.value.status == 404 and info.value.error["type"] == "invalid_request_error"
