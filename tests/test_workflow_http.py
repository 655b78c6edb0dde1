"""The HTTP Request node and its network guard, against a loopback test server.

The node runs in-process through a small NodeContext (literal parameters), plus the
two n8n fixtures through the real runtime when the trigger/noOp nodes are registered.
"""
from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from workflows.engine.contract import (
    MISSING,
    EngineServices,
    EngineSettings,
    Items,
    NodeContext,
    NodeError,
    NodeSpec,
    get_node,
    lookup,
)
from workflows.engine.netguard import AddressRefused, GuardedClient, Policy, classify

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "n8n" / "HttpRequest"
TODOS = {
    "1": {"id": 1, "todo": "Do something nice for someone I care about", "completed": True, "userId": 26},
    "3": {"id": 3, "todo": "Watch a classic movie", "completed": False, "userId": 4},
}
TODO_PAGE = {"todos": [{"id": 11, "todo": "Text a friend I haven't talked to in a long time", "completed": False,
                        "userId": 39},
                       {"id": 12, "todo": "Organize pantry", "completed": True, "userId": 39}],
             "total": 150, "skip": 10, "limit": 2}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode())

    def _route(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = url.path
        if path.startswith("/todos/"):
            todo = TODOS.get(path.rsplit("/", 1)[1])
            if todo is None:
                return self._json({"message": "not found"}, 404)
            if todo["id"] == 3 and self.headers.get("Authorization") != "Bearer 12345":
                return self._json({"message": "auth"}, 401)
            return self._json(todo)
        if path == "/todos":
            if query.get("limit") == ["2"] and query.get("skip") == ["10"]:
                return self._json(TODO_PAGE)
            return self._json({"query": query}, 400)
        if path == "/echo":
            return self._json({"method": self.command, "query": query, "headers": {k.lower(): v for k, v in self.headers.items()},
                               "body": body.decode("utf-8", "replace")})
        if path == "/list":
            return self._json([{"n": 1}, {"n": 2}, {"n": 3}])
        if path == "/text":
            return self._send(200, b"hello there", "text/plain; charset=utf-8")
        if path == "/png":
            return self._send(200, b"\x89PNG\r\n\x1a\nfake", "image/png")
        if path == "/status":
            code = int(query["code"][0])
            return self._send(code, b'{"detail": "nope, not here"}')
        if path == "/redirect":
            return self._send(int(query.get("code", ["302"])[0]), b"", "text/plain", {"Location": query["to"][0]})
        if path == "/loop":
            return self._send(302, b"", "text/plain", {"Location": "/loop"})
        if path == "/big":
            size = int(query["size"][0])
            return self._send(200, b"x" * size, "text/plain")
        if path == "/big-chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(int(query["chunks"][0])):
                chunk = b"y" * 4096
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return None
        if path == "/slow":
            time.sleep(float(query.get("s", ["2"])[0]))
            return self._json({"slow": True})
        return self._json({"message": f"no route {path}"}, 404)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _route


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


ALLOW = EngineSettings(http_allow=("127.0.0.1/32",), http_timeout_s=5)


class _Services(EngineServices):
    def __init__(self) -> None:
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


class FakeContext(NodeContext):
    """Literal parameters, one input; enough to drive a node handler without the runtime."""

    def __init__(self, node: dict[str, Any], items: Items | None = None, settings: EngineSettings = ALLOW) -> None:
        self.node = NodeSpec.from_json({"name": "HTTP Request", "type": "n8n-nodes-base.httpRequest", **node})
        self.run_index = 0
        self.settings = settings
        self.services = _Services()
        self.workflow = {}
        self.execution_id = None
        self.mode = "manual"
        self._items = items if items is not None else [{"json": {}}]

    def input_items(self, index: int = 0) -> Items:
        return copy.deepcopy(self._items) if index == 0 else []

    def input_count(self) -> int:
        return 1

    def has_input(self, index: int) -> bool:
        return index == 0

    def param(self, path: str, item_index: int = 0, default: Any = MISSING) -> Any:
        value = lookup(self.node.parameters, path)
        if value is MISSING:
            if default is MISSING:
                raise NodeError(f"parameter '{path}' is missing")
            return default
        return copy.deepcopy(value)

    raw_param = param


def run_node(parameters: dict[str, Any], *, version: float = 4.2, items: Items | None = None,
             settings: EngineSettings = ALLOW, **node: Any) -> list[dict[str, Any]]:
    ctx = FakeContext({"typeVersion": version, "parameters": parameters, **node}, items, settings)
    handler = get_node("n8n-nodes-base.httpRequest")
    assert handler is not None
    outputs = handler.execute(ctx)
    assert outputs is not None and len(outputs) == 1
    return outputs[0]


def jsons(items: list[dict[str, Any]]) -> list[Any]:
    return [i["json"] for i in items]


# --------------------------------------------------------------------------- requests


def test_get_query_headers_like_the_n8n_fixture(server: str) -> None:
    assert jsons(run_node({"url": f"{server}/todos/1", "options": {}}, version=3)) == [TODOS["1"]]
    assert jsons(run_node({"url": f"{server}/todos/3", "sendHeaders": True, "headerParameters": {"parameters": [
        {"name": "Authorization", "value": "Bearer 12345"}]}, "options": {}}, version=3)) == [TODOS["3"]]
    assert jsons(run_node({"url": f"{server}/todos", "sendQuery": True, "queryParameters": {"parameters": [
        {"name": "limit", "value": "2"}, {"name": "skip", "value": "10"}]}, "options": {}}, version=3)) == [TODO_PAGE]
    assert jsons(run_node({"url": f"{server}/todos/1", "sendHeaders": True, "options": {}}, version=3)) == [TODOS["1"]]


def test_post_json_body_keypair_and_raw_json(server: str) -> None:
    echoed = run_node({"method": "POST", "url": f"{server}/echo", "sendBody": True, "specifyBody": "json",
                       "jsonBody": '{"q": "abc", "n": [1, 2]}', "options": {}})[0]["json"]
    assert echoed["method"] == "POST" and json.loads(echoed["body"]) == {"q": "abc", "n": [1, 2]}
    assert echoed["headers"]["content-type"] == "application/json"
    echoed = run_node({"method": "PUT", "url": f"{server}/echo", "sendBody": True, "bodyParameters": {"parameters": [
        {"name": "user.name", "value": "ada"}, {"name": "user.age", "value": 36}]}, "options": {}})[0]["json"]
    assert echoed["method"] == "PUT" and json.loads(echoed["body"]) == {"user": {"name": "ada", "age": 36}}
    echoed = run_node({"method": "POST", "url": f"{server}/echo", "sendBody": True, "contentType": "form-urlencoded",
                       "bodyParameters": {"parameters": [{"name": "a", "value": "1"}, {"name": "b", "value": "x y"}]},
                       "options": {}})[0]["json"]
    assert echoed["body"] == "a=1&b=x+y" and echoed["headers"]["content-type"] == "application/x-www-form-urlencoded"
    echoed = run_node({"method": "POST", "url": f"{server}/echo", "sendBody": True, "contentType": "raw",
                       "rawContentType": "text/xml", "body": "<a/>", "options": {}})[0]["json"]
    assert echoed["body"] == "<a/>" and echoed["headers"]["content-type"] == "text/xml"


def test_query_json_repeated_keys_and_headers_lowercased(server: str) -> None:
    echoed = run_node({"url": f"{server}/echo?fixed=1", "sendQuery": True, "queryParameters": {"parameters": [
        {"name": "tag", "value": "a"}, {"name": "tag", "value": "b"}]}, "sendHeaders": True,
        "headerParameters": {"parameters": [{"name": "X-Custom", "value": "Yes"}]}, "options": {}})[0]["json"]
    assert echoed["query"] == {"fixed": ["1"], "tag": ["a", "b"]}
    assert echoed["headers"]["x-custom"] == "Yes"
    echoed = run_node({"url": f"{server}/echo", "sendQuery": True, "specifyQuery": "json",
                       "jsonQuery": '{"page": 2, "ok": true}', "options": {}})[0]["json"]
    assert echoed["query"] == {"page": ["2"], "ok": ["true"]}


def test_full_response_text_and_file_formats(server: str) -> None:
    full = run_node({"url": f"{server}/todos/1", "options": {"response": {"response": {"fullResponse": True}}}})[0]["json"]
    assert full["statusCode"] == 200 and full["statusMessage"] == "OK" and full["body"] == TODOS["1"]
    assert full["headers"]["content-type"] == "application/json"
    assert jsons(run_node({"url": f"{server}/text", "options": {}})) == [{"data": "hello there"}]
    assert jsons(run_node({"url": f"{server}/list", "options": {}})) == [{"n": 1}, {"n": 2}, {"n": 3}]
    text = run_node({"url": f"{server}/todos/1", "options": {"response": {"response": {
        "responseFormat": "text", "outputPropertyName": "raw"}}}})[0]["json"]
    assert json.loads(text["raw"]) == TODOS["1"]
    item = run_node({"url": f"{server}/png", "options": {}}, items=[{"json": {"keep": 1}}])[0]
    assert item["json"] == {"keep": 1}
    assert item["binary"]["data"]["mimeType"] == "image/png" and item["binary"]["data"]["fileName"] == "png"


def test_v1_parameters(server: str) -> None:
    items = run_node({"url": f"{server}/echo", "requestMethod": "POST", "responseFormat": "json",
                      "bodyParametersUi": {"parameter": [{"name": "a", "value": "b"}]},
                      "headerParametersUi": {"parameter": [{"name": "X-One", "value": "1"}]},
                      "queryParametersUi": {"parameter": [{"name": "q", "value": "z"}]}, "options": {}}, version=1)
    echoed = items[0]["json"]
    assert echoed["method"] == "POST" and json.loads(echoed["body"]) == {"a": "b"}
    assert echoed["headers"]["x-one"] == "1" and echoed["query"] == {"q": ["z"]}
    items = run_node({"url": f"{server}/list", "requestMethod": "GET", "responseFormat": "json",
                      "options": {"splitIntoItems": True}}, version=2)
    assert jsons(items) == [{"n": 1}, {"n": 2}, {"n": 3}]
    items = run_node({"url": f"{server}/text", "requestMethod": "GET", "responseFormat": "string",
                      "dataPropertyName": "out", "options": {"fullResponse": True}}, version=1)
    assert items[0]["json"]["out"] == "hello there" and items[0]["json"]["statusCode"] == 200
    with pytest.raises(NodeError, match="is no valid JSON"):
        run_node({"url": f"{server}/echo", "requestMethod": "POST", "jsonParameters": True,
                  "bodyParametersJson": "{nope", "options": {}}, version=1)


def test_status_errors_never_error_and_continue_on_fail(server: str) -> None:
    with pytest.raises(NodeError) as caught:
        run_node({"url": f"{server}/status?code=404", "options": {}})
    assert "Request failed with status code 404" in caught.value.message and "nope, not here" in caught.value.message
    full = run_node({"url": f"{server}/status?code=500", "options": {"response": {"response": {
        "neverError": True, "fullResponse": True}}}})[0]["json"]
    assert full["statusCode"] == 500 and full["body"] == {"detail": "nope, not here"}
    items = run_node({"url": f"{server}/status?code=503", "options": {}}, items=[{"json": {}}, {"json": {}}],
                     onError="continueRegularOutput")
    assert [i["json"]["error"].startswith("Request failed with status code 503") for i in items] == [True, True]
    assert [i["pairedItem"] for i in items] == [{"item": 0}, {"item": 1}]


def test_invalid_json_body_is_n8ns_message() -> None:
    with pytest.raises(NodeError, match="^JSON parameter needs to be valid JSON$"):
        run_node({"method": "POST", "url": "https://example.invalid/", "sendBody": True, "specifyBody": "json",
                  "jsonBody": '{\n  "q": "abc",\n}', "options": {}})


def test_redirects_are_followed_for_v4_and_not_for_v3(server: str) -> None:
    target = f"{server}/todos/1"
    assert jsons(run_node({"url": f"{server}/redirect?to={target}", "options": {}})) == [TODOS["1"]]
    assert jsons(run_node({"url": f"{server}/redirect?to=/todos/1&code=301", "options": {}})) == [TODOS["1"]]
    with pytest.raises(NodeError, match="status code 302"):
        run_node({"url": f"{server}/redirect?to={target}", "options": {}}, version=3)
    with pytest.raises(NodeError, match="Too many redirects"):
        run_node({"url": f"{server}/loop", "options": {}})
    echoed = run_node({"method": "POST", "url": f"{server}/redirect?code=307&to=/echo", "sendBody": True,
                       "specifyBody": "json", "jsonBody": '{"k": 1}', "options": {}})[0]["json"]
    assert echoed["method"] == "POST" and json.loads(echoed["body"]) == {"k": 1}


# --------------------------------------------------------------------------- the guard


@pytest.mark.parametrize("url, address, reason", [
    ("http://127.0.0.1:9/", "127.0.0.1", "loopback"),
    ("http://[::1]:9/", "::1", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", "link-local"),
    ("http://10.1.2.3/", "10.1.2.3", "private"),
    ("http://100.64.0.7/", "100.64.0.7", "carrier-grade NAT"),
    ("http://[::ffff:127.0.0.1]/", "127.0.0.1", "loopback"),
    ("http://0.0.0.0:9/", "0.0.0.0", "unspecified"),
    ("http://[fe80::1]/", "fe80::1", "link-local"),
])
def test_refused_addresses(url: str, address: str, reason: str) -> None:
    with pytest.raises(AddressRefused) as caught:
        run_node({"url": url, "options": {}}, settings=EngineSettings())
    assert f"The address {address}" in caught.value.message or f"The address ::ffff:{address}" in caught.value.message
    assert f"is not allowed: {reason} (allow it with HIVE_WORKFLOW_HTTP_ALLOW)" in caught.value.message


def test_a_hostname_resolving_to_loopback_is_refused_with_the_host_named() -> None:
    with pytest.raises(AddressRefused) as caught:
        run_node({"url": "http://localhost:9/", "options": {}}, settings=EngineSettings())
    assert "of host 'localhost' is not allowed: loopback (allow it with HIVE_WORKFLOW_HTTP_ALLOW)" in caught.value.message


def test_allow_list_by_host_and_cidr(server: str) -> None:
    port = urlsplit(server).port
    by_host = EngineSettings(http_allow=("localhost",))
    assert jsons(run_node({"url": f"http://localhost:{port}/todos/1", "options": {}}, settings=by_host)) == [TODOS["1"]]
    with pytest.raises(AddressRefused):  # the host is allowed, not its IP written out
        run_node({"url": f"{server}/todos/1", "options": {}}, settings=by_host)
    by_cidr = EngineSettings(http_allow=("127.0.0.0/8",))
    assert jsons(run_node({"url": f"{server}/todos/1", "options": {}}, settings=by_cidr)) == [TODOS["1"]]


def test_allow_entries_with_a_port_open_only_that_port(server: str) -> None:
    port = urlsplit(server).port
    for entry in (f"127.0.0.1:{port}", f"127.0.0.0/8:{port}", f"localhost:{port}"):
        allowed = EngineSettings(http_allow=(entry,))
        host = "localhost" if entry.startswith("localhost") else "127.0.0.1"
        assert jsons(run_node({"url": f"http://{host}:{port}/todos/1", "options": {}}, settings=allowed)) == [TODOS["1"]]
        with pytest.raises(AddressRefused, match=f"port {port + 1} is not allowed: loopback"):
            run_node({"url": f"http://{host}:{port + 1}/", "options": {}}, settings=allowed)
    # a bare entry still means every port
    anyport = EngineSettings(http_allow=("127.0.0.1",))
    with pytest.raises(NodeError) as caught:   # nothing listens there, but the guard lets it through
        run_node({"url": f"http://127.0.0.1:{port + 1}/", "options": {}}, settings=anyport)
    assert not isinstance(caught.value, AddressRefused)


def test_a_redirect_to_a_refused_address_is_refused(server: str) -> None:
    with pytest.raises(AddressRefused, match="169.254.169.254 is not allowed: link-local"):
        run_node({"url": f"{server}/redirect?to=http://169.254.169.254/latest/meta-data/", "options": {}})
    with pytest.raises(AddressRefused, match="The address ::1 is not allowed: loopback"):
        run_node({"url": f"{server}/redirect?to=http://[::1]:{urlsplit(server).port}/todos/1", "options": {}})
    port = urlsplit(server).port
    by_name = EngineSettings(http_allow=("localhost",))  # the name is allowed, the IP written out is not
    with pytest.raises(AddressRefused, match="^The address 127.0.0.1 is not allowed: loopback"):
        run_node({"url": f"http://localhost:{port}/redirect?to=http://127.0.0.1:{port}/todos/1", "options": {}},
                 settings=by_name)


def test_response_size_cap_declared_and_streamed(server: str) -> None:
    small = EngineSettings(http_allow=("127.0.0.1",), http_max_bytes=2048)
    with pytest.raises(NodeError, match="too large: 5000 bytes"):
        run_node({"url": f"{server}/big?size=5000", "options": {}}, settings=small)
    with pytest.raises(NodeError, match="larger than 2048 bytes"):
        run_node({"url": f"{server}/big-chunked?chunks=4", "options": {}}, settings=small)
    assert jsons(run_node({"url": f"{server}/big?size=100", "options": {}}, settings=small)) == [{"data": "x" * 100}]


def test_timeout_option_and_setting(server: str) -> None:
    started = time.monotonic()
    with pytest.raises(NodeError, match="timed out"):
        run_node({"url": f"{server}/slow?s=3", "options": {"timeout": 300}})
    assert time.monotonic() - started < 2.5
    quick = EngineSettings(http_allow=("127.0.0.1",), http_timeout_s=0.3)
    with pytest.raises(NodeError, match="timed out"):
        run_node({"url": f"{server}/slow?s=3", "options": {"timeout": 60_000}}, settings=quick)


def test_batching_sleeps_between_batches(server: str) -> None:
    ctx = FakeContext({"typeVersion": 4.2, "parameters": {"url": f"{server}/todos/1", "options": {
        "batching": {"batch": {"batchSize": 2, "batchInterval": 250}}}}}, [{"json": {}}] * 5)
    handler = get_node("n8n-nodes-base.httpRequest")
    assert handler is not None
    outputs = handler.execute(ctx)
    assert outputs is not None and len(outputs[0]) == 5
    assert ctx.services.slept == [0.25, 0.25]


def test_policy_classification_and_unsupported_parameters() -> None:
    import ipaddress

    assert classify(ipaddress.ip_address("8.8.8.8")) is None
    assert classify(ipaddress.ip_address("2606:4700::1111")) is None
    assert classify(ipaddress.ip_address("224.0.0.251")) == "multicast"
    assert classify(ipaddress.ip_address("64:ff9b::7f00:1")) == "loopback"
    assert Policy.from_allow(["*.internal", "10.0.0.0/8"]).host_allowed("api.internal")
    handler = get_node("n8n-nodes-base.httpRequest")
    assert handler is not None
    issues = handler.validate(NodeSpec.from_json({"name": "H", "type": "n8n-nodes-base.httpRequest", "typeVersion": 4.2,
                                                  "parameters": {"url": "ftp://x", "authentication": "genericCredentialType",
                                                                 "options": {"proxy": "http://p:3128"}}}))
    assert {i.parameter for i in issues} == {"url", "authentication", "options.proxy"}
    assert all(i.node == "H" for i in issues)


def test_guarded_client_directly(server: str) -> None:
    with GuardedClient(ALLOW) as client:
        response = client.request("GET", f"{server}/redirect?to=/text")
        assert response.status_code == 200 and response.text() == "hello there"
        assert response.redirects == [f"{server}/redirect?to=/text"]


# --------------------------------------------------------------------------- n8n fixtures through the runtime


def _runtime_ready(*types: str) -> None:
    missing = [t for t in types if get_node(t) is None]
    if missing:
        pytest.skip(f"node types not registered yet: {missing}")


def test_fixture_get_through_the_runtime(server: str) -> None:
    from workflows.engine.runtime import run_workflow

    _runtime_ready("n8n-nodes-base.manualTrigger")
    workflow = json.loads((FIXTURES / "workflow.get.json").read_text().replace("https://dummyjson.com", server))
    expected = workflow.pop("pinData")
    result = run_workflow(workflow, settings=ALLOW)
    assert result.status == "success", result.error
    for name, items in expected.items():
        assert [i["json"] for i in result.run_data[name][0].outputs[0]] == [i["json"] for i in items], name


def test_fixture_use_error_output_through_the_runtime() -> None:
    from workflows.engine.runtime import run_workflow

    _runtime_ready("n8n-nodes-base.manualTrigger", "n8n-nodes-base.noOp")
    workflow = json.loads((FIXTURES / "workflow.use_error_output.json").read_text())
    expected = workflow.pop("pinData")
    result = run_workflow(workflow, settings=EngineSettings())
    assert result.status == "success", result.error
    assert [i["json"] for i in result.run_data["Error path"][0].outputs[0]] == [i["json"] for i in expected["Error path"]]
    assert "Success path" not in result.run_data
