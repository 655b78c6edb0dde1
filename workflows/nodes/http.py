"""n8n's HTTP Request node (``n8n-nodes-base.httpRequest`` v1, v2, v3, v4, v4.1, v4.2).

Parameter names and output shapes follow n8n's HttpRequestV1/V2 (``requestMethod``,
``responseFormat``, ``jsonParameters``, ``*ParametersUi``, flat ``options``) and HttpRequestV3
(v3+: ``method``, ``sendQuery``/``sendHeaders``/``sendBody``, ``options.response.response``,
``options.redirect.redirect``, ``options.batching.batch``). Every request goes through
:mod:`workflows.engine.netguard` (address policy on every hop, timeouts, response size cap).

Not supported, each refused with a clear error: credentials (``authentication`` other than
``none``; send them as headers), proxies and pagination.
"""
from __future__ import annotations

import base64
import json
import mimetypes
import re
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from workflows.engine.contract import (
    Item,
    Node,
    NodeContext,
    NodeError,
    NodeSpec,
    Outputs,
    ValidationIssue,
    register,
)
from workflows.engine.netguard import GuardedClient, HttpResponse

JSON_ERROR = "JSON parameter needs to be valid JSON"
ACCEPT_JSON = "application/json,text/*;q=0.99"
ACCEPT_TEXT = "application/json,text/html,application/xhtml+xml,application/xml,text/*;q=0.9, */*;q=0.1"
ACCEPT_ANY = "application/json,text/html,application/xhtml+xml,application/xml,text/*;q=0.9, image/*;q=0.8, */*;q=0.7"
BINARY_CONTENT_TYPES = (
    "image/", "audio/", "video/", "application/octet-stream", "application/gzip", "application/zip",
    "application/vnd.rar", "application/epub+zip", "application/x-bzip", "application/x-bzip2",
    "application/x-cdf", "application/vnd.amazon.ebook", "application/msword",
    "application/vnd.ms-fontobject", "application/vnd.oasis.opendocument", "application/pdf",
    "application/x-7z-compressed", "application/x-tar", "application/vnd.openxmlformats",
    "application/vnd.ms-excel", "application/vnd.ms-powerpoint", "font/",
)
STATUS_HINTS = {
    429: "Try spacing your requests out using the batching settings under 'Options'",
}
BODY_EXCERPT = 500


def _is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("=")


def _excerpt(response: HttpResponse) -> str:
    text = response.text().strip()
    return text if len(text) <= BODY_EXCERPT else text[:BODY_EXCERPT] + "…"


def _scalar(value: Any) -> str:
    """A query/form value as a string the way JavaScript's String() would write it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def _query_pairs(query: dict[str, Any], array_format: str) -> list[tuple[str, str]]:
    """Flatten a query object like the ``qs`` library: arrays as repeat/brackets/indices."""
    pairs: list[tuple[str, str]] = []

    def add(key: str, value: Any) -> None:
        if isinstance(value, list):
            for index, element in enumerate(value):
                if array_format == "brackets":
                    add(f"{key}[]", element)
                elif array_format == "indices":
                    add(f"{key}[{index}]", element)
                else:
                    add(key, element)
        elif isinstance(value, dict):
            for sub, element in value.items():
                add(f"{key}[{sub}]", element)
        else:
            pairs.append((key, _scalar(value)))

    for key, value in query.items():
        add(str(key), value)
    return pairs


def _add_repeated(target: dict[str, Any], name: str, value: Any) -> None:
    """n8n's key/value reducer: a repeated name collects its values into a list."""
    if name in target:
        old = target[name]
        target[name] = [*old, value] if isinstance(old, list) else [old, value]
    else:
        target[name] = value


def _set_path(target: dict[str, Any], path: str, value: Any) -> None:
    """lodash ``set`` for dotted names (v4+ JSON body key/value pairs)."""
    parts = [p for p in re.split(r"\.|\[(\d+)\]", path) if p]
    current: Any = target
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        key: Any = int(part) if isinstance(current, list) and part.isdigit() else part
        if last:
            if isinstance(current, list):
                while len(current) <= key:
                    current.append(None)
            current[key] = value
            return
        nxt_is_index = parts[index + 1].isdigit()
        if isinstance(current, list):
            while len(current) <= key:
                current.append(None)
            if not isinstance(current[key], (dict, list)):
                current[key] = [] if nxt_is_index else {}
            current = current[key]
        else:
            if not isinstance(current.get(key), (dict, list)):
                current[key] = [] if nxt_is_index else {}
            current = current[key]


def _parse_json(value: Any, message: str = JSON_ERROR) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as exc:
        raise NodeError(message, description=str(exc)) from None


def _binary_bytes(item: Item, field: str, item_index: int) -> tuple[bytes, dict[str, Any]]:
    binary = (item.get("binary") or {}).get(field)
    if not isinstance(binary, dict) or "data" not in binary:
        raise NodeError(f"This operation expects the node's input data to contain a binary file '{field}', "
                        f"but none was found [item {item_index}]")
    try:
        return base64.b64decode(binary["data"]), binary
    except (ValueError, TypeError):
        raise NodeError(f"The binary property '{field}' does not hold base64 data [item {item_index}]") from None


def _file_size(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size} {unit}" if unit == "B" else f"{size:.1f} {unit}".replace(".0 ", " ")
        size /= 1024  # type: ignore[assignment]
    return f"{size} B"


def _binary_of(response: HttpResponse, file_name: str | None = None) -> dict[str, Any]:
    """n8n's binary data object for a downloaded body."""
    mime = response.content_type.split(";")[0].strip() or "application/octet-stream"
    name = file_name
    disposition = response.headers.get("content-disposition", "")
    match = re.search(r"filename\*=(?:UTF-8'')?([^;]+)|filename=\"?([^\";]+)\"?", disposition, re.IGNORECASE)
    if not name and match:
        name = unquote((match.group(1) or match.group(2) or "").strip())
    if not name:
        name = unquote(urlsplit(response.url).path.rsplit("/", 1)[-1]) or None
    extension = (name.rsplit(".", 1)[-1] if name and "." in name else (mimetypes.guess_extension(mime) or "").lstrip("."))
    data: dict[str, Any] = {"data": base64.b64encode(response.body).decode("ascii"), "mimeType": mime,
                            "fileSize": _file_size(len(response.body))}
    if extension:
        data["fileExtension"] = extension
    if name:
        data["fileName"] = name
    return data


def _items_from(value: Any, item_index: int, split: bool) -> list[Item]:
    """Output items for a parsed body: arrays split when asked, non-objects wrapped."""
    if split and isinstance(value, list):
        return [{"json": v if isinstance(v, dict) else {"data": v}, "pairedItem": {"item": item_index}} for v in value]
    if value is None:
        value = {}
    return [{"json": value if isinstance(value, dict) else {"data": value}, "pairedItem": {"item": item_index}}]


class _Request:
    """One prepared request (built per item from the node's parameters)."""

    def __init__(self) -> None:
        self.method = "GET"
        self.url = ""
        self.query: dict[str, Any] = {}
        self.headers: dict[str, str] = {}
        self.json_body: Any = None
        self.form: dict[str, Any] | None = None
        self.files: list[tuple[str, tuple[str | None, bytes, str | None]]] | None = None
        self.content: bytes | str | None = None
        self.timeout_s: float | None = None
        self.follow = True
        self.follow_non_get = True
        self.max_redirects = 10
        self.verify = True
        self.array_format = "repeat"


@register
class HttpRequest(Node):
    type = "n8n-nodes-base.httpRequest"
    versions = (1, 2, 3, 4, 4.1, 4.2)
    required = ("url",)

    def validate(self, node: NodeSpec) -> list[ValidationIssue]:
        issues = super().validate(node)
        auth = node.parameters.get("authentication", "none")
        if not _is_expression(auth) and auth not in (None, "", "none"):
            issues.append(ValidationIssue(
                f"authentication '{auth}' is not supported (Hive stores no credentials); "
                "send them as headers instead", node.name, "authentication"))
        options = node.parameters.get("options") or {}
        if isinstance(options, dict):
            if options.get("proxy"):
                issues.append(ValidationIssue("proxies are not supported", node.name, "options.proxy"))
            mode = ((options.get("pagination") or {}).get("pagination") or {}).get("paginationMode", "off") \
                if isinstance(options.get("pagination"), dict) else "off"
            if mode not in ("off", None):
                issues.append(ValidationIssue("pagination is not supported", node.name, "options.pagination"))
        url = node.parameters.get("url")
        if isinstance(url, str) and not _is_expression(url) and url.strip() and \
                not url.strip().startswith(("http://", "https://")):
            issues.append(ValidationIssue(f"Invalid URL: {url}. URL must start with \"http\" or \"https\".",
                                          node.name, "url"))
        return issues

    # ------------------------------------------------------------------ execution

    def execute(self, ctx: NodeContext) -> Outputs | None:
        items = ctx.input_items(0)
        version = float(ctx.node.type_version or 1)
        out: list[Item] = []
        clients: dict[bool, GuardedClient] = {}
        try:
            for index, item in enumerate(items):
                ctx.check_cancelled()
                try:
                    self._batch_pause(ctx, index, version)
                    request = self._build_v1(ctx, item, index) if version < 3 else self._build_v3(ctx, item, index, version)
                    client = clients.get(request.verify)
                    if client is None:
                        client = clients[request.verify] = GuardedClient(ctx.settings, verify=request.verify)
                    response = self._send(client, request)
                    if version < 3:
                        out.extend(self._output_v1(ctx, item, index, response))
                    else:
                        out.extend(self._output_v3(ctx, item, index, response))
                except NodeError as exc:
                    if not ctx.node.continue_on_fail:
                        if exc.item_index is None:
                            exc.item_index = index
                        raise
                    out.append({"json": {"error": exc.message}, "pairedItem": {"item": index}})
        finally:
            for client in clients.values():
                client.close()
        return [out]

    @staticmethod
    def _batch_pause(ctx: NodeContext, index: int, version: float) -> None:
        if index == 0:
            return
        if version < 3:
            options = ctx.param("options", index, {}) or {}
            size, interval = options.get("batchSize"), options.get("batchInterval")
            if not isinstance(size, (int, float)) or size < 0 or not isinstance(interval, (int, float)) or interval <= 0:
                return
        else:
            batch = ctx.param("options.batching.batch", index, {}) or {}
            size, interval = batch.get("batchSize", 50), batch.get("batchInterval", 1000)
            if not isinstance(interval, (int, float)) or interval <= 0:
                return
            if not isinstance(size, (int, float)) or size < 0:
                return
        size = int(size) if size > 0 else 1
        if index % size == 0:
            ctx.services.sleep(float(interval) / 1000.0)

    @staticmethod
    def _url(ctx: NodeContext, index: int) -> str:
        url = ctx.param("url", index)
        if not isinstance(url, str):
            kind = "null" if url is None else type(url).__name__
            raise NodeError(f"URL parameter must be a string, got {kind}")
        url = url.strip()
        if not url:
            raise NodeError("URL parameter cannot be empty")
        if not url.startswith(("http://", "https://")):
            raise NodeError(f"Invalid URL: {url}. URL must start with \"http\" or \"https\".")
        return url

    @staticmethod
    def _no_credentials(ctx: NodeContext, index: int) -> None:
        auth = ctx.param("authentication", index, "none")
        if auth not in (None, "", "none"):
            raise NodeError(f"Authentication '{auth}' is not supported (Hive stores no credentials); "
                            "send them as headers instead")

    @staticmethod
    def _timeout(ctx: NodeContext, value: Any) -> float:
        limit = ctx.settings.http_timeout_s
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return min(float(value) / 1000.0, limit)
        return limit

    # v1 / v2 ---------------------------------------------------------------

    def _build_v1(self, ctx: NodeContext, item: Item, index: int) -> _Request:
        self._no_credentials(ctx, index)
        req = _Request()
        req.method = str(ctx.param("requestMethod", index, "GET") or "GET").upper()
        req.url = self._url(ctx, index)
        options = ctx.param("options", index, {}) or {}
        if options.get("proxy"):
            raise NodeError("Proxies are not supported")
        req.verify = not ctx.param("allowUnauthorizedCerts", index, False)
        req.timeout_s = self._timeout(ctx, options.get("timeout"))
        req.follow = options.get("followRedirect", True) is not False
        req.follow_non_get = bool(options.get("followAllRedirects", False))
        req.array_format = "repeat" if options.get("useQueryString") else "indices"
        content_type = options.get("bodyContentType", "json")
        response_format = ctx.param("responseFormat", index, "json")
        body: Any = None
        if ctx.param("jsonParameters", index, False):
            if ctx.param("sendBinaryData", index, False) and req.method in ("PATCH", "POST", "PUT"):
                body = self._v1_binary_body(ctx, item, index, content_type, req)
            else:
                raw_body = ctx.param("bodyParametersJson", index, "")
                if raw_body != "" and raw_body is not None and req.method in ("PATCH", "POST", "PUT", "DELETE"):
                    body = raw_body if content_type == "raw" else _parse_json(
                        raw_body, 'The data in "Body Parameters" is no valid JSON. Set Body Content Type to '
                                  '"RAW/Custom" for XML or other types of payloads')
            for name, label, target in (("headerParametersJson", "Headers", "headers"),
                                        ("queryParametersJson", "Query Parameters", "query")):
                value = ctx.param(name, index, "")
                if value == "" or value is None:
                    continue
                parsed = _parse_json(value, f'The data in "{label}" is no valid JSON. Set Body Content Type to '
                                            '"RAW/Custom" for XML or other types of payloads')
                if not isinstance(parsed, dict):
                    raise NodeError(f'The data in "{label}" must be a JSON object')
                if target == "headers":
                    req.headers.update({str(k): _scalar(v) for k, v in parsed.items()})
                else:
                    req.query.update(parsed)
        else:
            for name, target in (("bodyParametersUi", "body"), ("headerParametersUi", "headers"),
                                 ("queryParametersUi", "query")):
                ui = ctx.param(name, index, {}) or {}
                entries = ui.get("parameter") if isinstance(ui, dict) else None
                if entries is None:
                    continue
                if target == "body":
                    if req.method not in ("PATCH", "POST", "PUT", "DELETE"):
                        continue
                    body = {}
                for entry in entries or []:
                    name_ = str(entry.get("name", ""))
                    value = entry.get("value", "")
                    if target == "query":
                        _add_repeated(req.query, name_, value)
                    elif target == "headers":
                        req.headers[name_.lower()] = _scalar(value)
                    else:
                        body[name_] = value
        if body is not None:
            if req.method in ("PATCH", "POST", "PUT") and content_type == "multipart-form-data" and isinstance(body, dict):
                req.files = [(k, (None, _scalar(v).encode(), None)) for k, v in body.items()] if not req.files else req.files
            elif req.method in ("PATCH", "POST", "PUT") and content_type == "form-urlencoded" and isinstance(body, dict):
                req.form = {k: v if isinstance(v, list) else _scalar(v) for k, v in body.items()}
            elif content_type == "raw" or isinstance(body, (bytes, str)):
                req.content = body if isinstance(body, (bytes, str)) else json.dumps(body)
            else:
                req.json_body = body
        if options.get("bodyContentCustomMimeType"):
            req.headers["Content-Type"] = str(options["bodyContentCustomMimeType"])
        if "accept" not in {k.lower() for k in req.headers}:
            req.headers["accept"] = {"json": ACCEPT_JSON, "string": ACCEPT_TEXT}.get(response_format, ACCEPT_ANY)
        return req

    @staticmethod
    def _v1_binary_body(ctx: NodeContext, item: Item, index: int, content_type: str, req: _Request) -> Any:
        if content_type not in ("raw", "multipart-form-data"):
            raise NodeError('Sending binary data is only supported when option "Body Content Type" is set to '
                            '"RAW/CUSTOM" or "FORM-DATA/MULTIPART"!')
        names = str(ctx.param("binaryPropertyName", index, "data"))
        if content_type == "raw":
            data, _meta = _binary_bytes(item, names.strip(), index)
            return data
        parts = [p.strip() for p in names.split(",") if p.strip()]
        files = []
        for part in parts:
            field, prop = ("file", part)
            if ":" in part:
                field, prop = part.split(":", 1)
            elif len(parts) > 1:
                raise NodeError('If more than one property should be send it is needed to define the in the format:'
                                '"sendKey1:binaryProperty1,sendKey2:binaryProperty2"')
            data, meta = _binary_bytes(item, prop, index)
            files.append((field, (meta.get("fileName") or "file", data, meta.get("mimeType"))))
        req.files = files
        return {}

    def _output_v1(self, ctx: NodeContext, item: Item, index: int, response: HttpResponse) -> list[Item]:
        options = ctx.param("options", index, {}) or {}
        if not (200 <= response.status_code < 300) and not options.get("ignoreResponseCode"):
            raise self._status_error(response)
        response_format = ctx.param("responseFormat", 0, "json")
        full = bool(options.get("fullResponse"))
        meta = {"headers": response.headers, "statusCode": response.status_code, "statusMessage": response.reason}
        if response_format == "file":
            prop = str(ctx.param("dataPropertyName", 0, "data"))
            new: Item = {"json": meta if full else dict(item.get("json") or {}),
                         "binary": {**(item.get("binary") or {}), prop: _binary_of(response)},
                         "pairedItem": {"item": index}}
            return [new]
        if response_format == "string":
            prop = str(ctx.param("dataPropertyName", 0, "data"))
            text = response.text()
            data = {**meta, prop: text} if full else {prop: text}
            return [{"json": data, "pairedItem": {"item": index}}]
        body: Any = response.text()
        if body.strip():
            try:
                body = json.loads(body)
            except ValueError:
                raise NodeError('Response body is not valid JSON. Change "Response Format" to "String"') from None
        else:
            body = None if not full else ""
        if full:
            return [{"json": {"body": body, **meta}, "pairedItem": {"item": index}}]
        return _items_from(body, index, bool(options.get("splitIntoItems")))

    # v3 / v4.x -------------------------------------------------------------

    def _build_v3(self, ctx: NodeContext, item: Item, index: int, version: float) -> _Request:
        self._no_credentials(ctx, index)
        req = _Request()
        req.url = self._url(ctx, index)
        req.method = str(ctx.param("method", index, "GET") or "GET").upper()
        options = ctx.param("options", index, {}) or {}
        if options.get("proxy"):
            raise NodeError("Proxies are not supported")
        pagination = ((options.get("pagination") or {}).get("pagination") or {}) \
            if isinstance(options.get("pagination"), dict) else {}
        if pagination.get("paginationMode", "off") != "off":
            raise NodeError("Pagination is not supported")
        req.verify = not options.get("allowUnauthorizedCerts", False)
        req.timeout_s = self._timeout(ctx, options.get("timeout"))
        redirect = (options.get("redirect") or {}).get("redirect") if isinstance(options.get("redirect"), dict) else None
        if redirect is None:
            req.follow = version >= 4 and "redirect" not in options
        else:
            req.follow = bool(redirect.get("followRedirects", version >= 4))
        if redirect and redirect.get("maxRedirects"):
            req.max_redirects = int(redirect["maxRedirects"])
        req.array_format = str(options.get("queryParameterArrays") or "repeat")
        response = ((options.get("response") or {}).get("response") or {}) if isinstance(options.get("response"), dict) else {}
        response_format = response.get("responseFormat") or "autodetect"

        def reduce(entries: Any) -> dict[str, Any]:
            result: dict[str, Any] = {}
            for entry in entries or []:
                if isinstance(entry, dict):
                    _add_repeated(result, str(entry.get("name", "")), entry.get("value", ""))
            return result

        if ctx.param("sendQuery", index, False):
            if ctx.param("specifyQuery", index, "keypair") == "json":
                parsed = _parse_json(ctx.param("jsonQuery", index, ""))
                if not isinstance(parsed, dict):
                    raise NodeError("JSON query parameters must be a JSON object")
                req.query = parsed
            else:
                req.query = reduce(ctx.param("queryParameters.parameters", index, []))
        if ctx.param("sendHeaders", index, False):
            if ctx.param("specifyHeaders", index, "keypair") == "json":
                headers = _parse_json(ctx.param("jsonHeaders", index, ""))
                if not isinstance(headers, dict):
                    raise NodeError("JSON headers must be a JSON object")
            else:
                headers = reduce([h for h in ctx.param("headerParameters.parameters", index, []) or []
                                  if isinstance(h, dict) and h.get("name")])
            lower = options.get("lowercaseHeaders", True) is not False
            for name, value in headers.items():
                req.headers[name.lower() if lower else name] = _scalar(value)
        if ctx.param("sendBody", index, False):
            self._v3_body(ctx, item, index, version, req)
        if "accept" not in {k.lower() for k in req.headers}:
            req.headers["accept"] = {"json": ACCEPT_JSON, "text": ACCEPT_TEXT}.get(response_format, ACCEPT_ANY)
        return req

    @staticmethod
    def _v3_body(ctx: NodeContext, item: Item, index: int, version: float, req: _Request) -> None:
        content_type = ctx.param("contentType", index, "json") or "json"
        specify = ctx.param("specifyBody", index, "keypair") or "keypair"
        body: Any = None
        if content_type == "binaryData":
            field = str(ctx.param("inputDataFieldName", index, "data"))
            data, meta = _binary_bytes(item, field, index)
            req.content = data
            req.headers["content-type"] = meta.get("mimeType") or "application/octet-stream"
            return
        if content_type == "raw":
            req.content = _scalar(ctx.param("body", index, ""))
            req.headers["content-type"] = str(ctx.param("rawContentType", index, "") or "text/plain")
            return
        params = ctx.param("bodyParameters.parameters", index, []) or []
        if specify == "keypair" or content_type == "multipart-form-data":
            if content_type == "multipart-form-data":
                files = []
                for entry in params:
                    if not isinstance(entry, dict):
                        continue
                    name = str(entry.get("name", ""))
                    if entry.get("parameterType") == "formBinaryData":
                        field = entry.get("inputDataFieldName")
                        if not field:
                            continue
                        data, meta = _binary_bytes(item, str(field), index)
                        files.append((name, (meta.get("fileName") or "file", data, meta.get("mimeType"))))
                    else:
                        files.append((name, (None, _scalar(entry.get("value", "")).encode(), None)))
                req.files = files
                return
            body = {}
            for entry in params:
                if not isinstance(entry, dict):
                    continue
                if content_type == "json" and version >= 4:
                    _set_path(body, str(entry.get("name", "")), entry.get("value", ""))
                else:
                    _add_repeated(body, str(entry.get("name", "")), entry.get("value", ""))
        elif specify == "json":
            body = _parse_json(ctx.param("jsonBody", index, ""))
        elif specify == "string":
            body = dict(parse_qsl(_scalar(ctx.param("body", index, "")), keep_blank_values=True))
        if body is None:
            return
        if content_type == "form-urlencoded":
            if not isinstance(body, dict):
                raise NodeError("A form-urlencoded body must be an object of fields")
            req.form = {k: v if isinstance(v, list) else _scalar(v) for k, v in body.items()}
        else:
            req.json_body = body

    def _output_v3(self, ctx: NodeContext, item: Item, index: int, response: HttpResponse) -> list[Item]:
        options = ctx.param("options", index, {}) or {}
        settings = ((options.get("response") or {}).get("response") or {}) if isinstance(options.get("response"), dict) else {}
        never_error = bool(settings.get("neverError"))
        if not (200 <= response.status_code < 300) and not never_error:
            raise self._status_error(response)
        response_format = settings.get("responseFormat") or "autodetect"
        full = bool(settings.get("fullResponse"))
        prop = str(settings.get("outputPropertyName") or "data")
        content_type = response.content_type.lower()
        body: Any
        if response_format == "autodetect":
            if "application/json" in content_type:
                response_format = "json"
                text = response.text()
                if not text.strip():
                    body = {}
                else:
                    try:
                        body = json.loads(text)
                    except ValueError:
                        if not never_error:
                            raise NodeError("Invalid JSON in response body") from None
                        body = {}
            elif any(t in content_type for t in BINARY_CONTENT_TYPES):
                response_format, body = "file", None
            else:
                response_format = "text"
                body = response.text() or None
        elif response_format == "json":
            text = response.text()
            if not text.strip():
                body = {}
            else:
                try:
                    body = json.loads(text)
                except ValueError:
                    raise NodeError('Response body is not valid JSON. Change "Response Format" to "Text"') from None
        elif response_format == "file":
            body = None
        else:
            body = response.text()
        meta = {"headers": response.headers, "statusCode": response.status_code, "statusMessage": response.reason}
        if response_format == "file":
            new: Item = {"json": meta if full else dict(item.get("json") or {}),
                         "binary": {**(item.get("binary") or {}), prop: _binary_of(response)},
                         "pairedItem": {"item": index}}
            return [new]
        if response_format == "text":
            text = body if isinstance(body, str) else ("" if body is None else json.dumps(body))
            data = {"headers": meta["headers"], "statusCode": meta["statusCode"], "statusMessage": meta["statusMessage"],
                    prop: text} if full else {prop: text}
            return [{"json": data, "pairedItem": {"item": index}}]
        if full:
            return [{"json": {"body": body, **meta}, "pairedItem": {"item": index}}]
        return _items_from(body, index, True)

    @staticmethod
    def _status_error(response: HttpResponse) -> NodeError:
        excerpt = _excerpt(response)
        message = f"Request failed with status code {response.status_code}"
        if excerpt:
            message += f": {excerpt}"
        description = STATUS_HINTS.get(response.status_code) or f"{response.status_code} {response.reason}".strip()
        return NodeError(message, description=description)

    @staticmethod
    def _send(client: GuardedClient, req: _Request) -> HttpResponse:
        follow = req.follow and (req.follow_non_get or req.method in ("GET", "HEAD"))
        params = _query_pairs(req.query, req.array_format) if req.query else None
        form = req.form
        if form is not None:
            form = {k: [_scalar(x) for x in v] if isinstance(v, list) else v for k, v in form.items()}
        return client.request(req.method, req.url, params=params, headers=req.headers, json_body=req.json_body,
                              data=form, files=req.files, content=req.content, timeout=req.timeout_s,
                              follow_redirects=follow, max_redirects=req.max_redirects)


__all__ = ["HttpRequest"]
