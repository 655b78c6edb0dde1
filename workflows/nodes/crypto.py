"""Crypto (``n8n-nodes-base.crypto``) v1: hash, HMAC, sign (PEM private key) and generate."""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid
from typing import Any

from workflows.engine.contract import Item, Node, NodeContext, NodeError, NodeSpec, Outputs, ValidationIssue, register
from workflows.nodes.conditions import deep_copy, js_number, js_string, path_set

ACTIONS = ("hash", "hmac", "sign", "generate")
ENCODINGS = ("hex", "base64")
GENERATE_TYPES = ("uuid", "ascii", "base64", "hex")

# Node's hash names (case-insensitive) -> hashlib names.
_HASHES = {
    "md5": "md5", "sha1": "sha1", "sha224": "sha224", "sha256": "sha256", "sha384": "sha384", "sha512": "sha512",
    "sha3-224": "sha3_224", "sha3-256": "sha3_256", "sha3-384": "sha3_384", "sha3-512": "sha3_512",
    "sha512-224": "sha512_224", "sha512-256": "sha512_256", "ripemd160": "ripemd160", "rmd160": "ripemd160",
    "shake128": "shake_128", "shake256": "shake_256", "sm3": "sm3", "blake2b512": "blake2b", "blake2s256": "blake2s",
}


def _hash_name(name: str, item_index: int) -> str:
    key = name.strip().lower()
    if key in _HASHES:
        return _HASHES[key]
    raise NodeError(f"Digest method not supported: '{name}'", item_index=item_index)


def _encode(digest: bytes, encoding: str, item_index: int) -> str:
    if encoding == "hex":
        return digest.hex()
    if encoding == "base64":
        return base64.b64encode(digest).decode("ascii")
    if encoding == "latin1":
        return digest.decode("latin-1")
    raise NodeError(f"Unknown encoding '{encoding}'", item_index=item_index)


def _sign_hash(algorithm: str, item_index: int) -> Any:
    """Pick the digest of a Node ``createSign`` algorithm name (RSA-SHA256, sha256, sha256WithRSAEncryption, ...)."""
    from cryptography.hazmat.primitives import hashes

    name = algorithm.strip().lower()
    name = re.sub(r"^(rsa-|ecdsa-with-|dsa-with-|dsa-)", "", name)
    name = re.sub(r"withrsaencryption$", "", name)
    digests = {
        "md5": hashes.MD5, "sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
        "sha512": hashes.SHA512, "sha3-224": hashes.SHA3_224, "sha3-256": hashes.SHA3_256, "sha3-384": hashes.SHA3_384,
        "sha3-512": hashes.SHA3_512, "sha512-224": hashes.SHA512_224, "sha512-256": hashes.SHA512_256,
    }
    if name not in digests:
        raise NodeError(f"Invalid digest: '{algorithm}'", item_index=item_index)
    return digests[name]()


def sign(data: bytes, algorithm: str, private_key: str, item_index: int) -> bytes:
    """Node's ``createSign(algorithm).update(data).sign(pem)``: PKCS#1 v1.5 for RSA, DER ECDSA/DSA."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa

    try:
        key = serialization.load_pem_private_key(private_key.encode("utf-8"), password=None)
    except (ValueError, TypeError) as exc:
        raise NodeError(f"Invalid private key: {exc}", item_index=item_index) from exc
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return key.sign(data)
    digest = _sign_hash(algorithm, item_index)
    try:
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), digest)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(digest))
        if isinstance(key, dsa.DSAPrivateKey):
            return key.sign(data, digest)
    except Exception as exc:  # noqa: BLE001 - OpenSSL refusals (key too small for digest, ...)
        raise NodeError(f"Signing failed: {exc}", item_index=item_index) from exc
    raise NodeError("Unsupported private key type", item_index=item_index)


def _binary_bytes(item: Item, property_name: str, item_index: int) -> bytes:
    binary = (item.get("binary") or {}).get(property_name)
    if not isinstance(binary, dict) or binary.get("data") is None:
        raise NodeError(f"This operation expects the node's input data to contain a binary file '{property_name}', "
                        f"but none was found [item {item_index}]", item_index=item_index)
    try:
        return base64.b64decode(binary["data"])
    except (ValueError, TypeError) as exc:
        raise NodeError(f"Binary property '{property_name}' is not valid base64", item_index=item_index) from exc


def generate(encoding_type: str, length: int) -> str:
    if encoding_type == "uuid":
        return str(uuid.uuid4())
    raw = secrets.token_bytes(max(length, 0))
    if encoding_type == "base64":
        return re.sub(r"\W", "", base64.b64encode(raw).decode("ascii"))[:length]
    if encoding_type == "hex":
        return raw.hex()[:length]
    return "".join(chr(b & 0x7F) for b in raw)[:length]  # Node's 'ascii' decoding drops the high bit


@register
class CryptoNode(Node):
    """Crypto."""

    type = "n8n-nodes-base.crypto"
    versions = (1,)

    def validate(self, node: NodeSpec) -> list[ValidationIssue]:
        issues = super().validate(node)
        params = node.parameters
        action = params.get("action", "hash")
        if action not in ACTIONS:
            return [*issues, ValidationIssue(f"unknown action '{action}' (expected one of {', '.join(ACTIONS)})", node.name,
                                             "action")]
        if action in ("hash", "hmac"):
            kind = params.get("type", "MD5")
            if isinstance(kind, str) and not kind.startswith("=") and kind.strip().lower() not in _HASHES:
                issues.append(ValidationIssue(f"unknown hash type '{kind}'", node.name, "type"))
        if action != "generate":
            encoding = params.get("encoding", "hex")
            if isinstance(encoding, str) and not encoding.startswith("=") and encoding not in ENCODINGS:
                issues.append(ValidationIssue(f"unknown encoding '{encoding}'", node.name, "encoding"))
        if action == "sign" and not params.get("privateKey"):
            issues.append(ValidationIssue("required parameter is missing", node.name, "privateKey"))
        if action == "generate":
            kind = params.get("encodingType", "uuid")
            if isinstance(kind, str) and not kind.startswith("=") and kind not in GENERATE_TYPES:
                issues.append(ValidationIssue(f"unknown type '{kind}'", node.name, "encodingType"))
        return issues

    def execute(self, ctx: NodeContext) -> Outputs:
        action = ctx.param("action", 0, "hash")
        result: list[Item] = []
        for index, item in enumerate(ctx.input_items(0)):
            property_name = js_string(ctx.param("dataPropertyName", index, "data"))
            value = self._compute(ctx, action, item, index)
            if "." in property_name:
                new_item: Item = {"json": deep_copy(item.get("json") or {}), "pairedItem": {"item": index}}
            else:
                new_item = {"json": dict(item.get("json") or {}), "pairedItem": {"item": index}}
            if item.get("binary") is not None:
                new_item["binary"] = item["binary"]
            path_set(new_item["json"], property_name, value)
            result.append(new_item)
        return [result]

    @staticmethod
    def _data(ctx: NodeContext, item: Item, index: int) -> bytes:
        if ctx.param("binaryData", index, False):
            return _binary_bytes(item, js_string(ctx.param("binaryPropertyName", index, "data")), index)
        value = ctx.param("value", index, "")
        return (value if isinstance(value, str) else js_string(value)).encode("utf-8")

    def _compute(self, ctx: NodeContext, action: str, item: Item, index: int) -> str:
        if action == "generate":
            encoding_type = ctx.param("encodingType", index, "uuid")
            if encoding_type not in GENERATE_TYPES:
                raise NodeError(f"Unknown type '{encoding_type}'", item_index=index)
            length = 0 if encoding_type == "uuid" else int(js_number(ctx.param("stringLength", index, 32)) or 0)
            return generate(encoding_type, length)
        encoding = ctx.param("encoding", index, "hex")
        data = self._data(ctx, item, index)
        if action == "hash":
            name = _hash_name(js_string(ctx.param("type", index, "MD5")), index)
            hasher = hashlib.new(name)
            hasher.update(data)
            digest = hasher.digest(32) if name.startswith("shake") else hasher.digest()  # type: ignore[call-arg]
            return _encode(digest, encoding, index)
        if action == "hmac":
            name = _hash_name(js_string(ctx.param("type", index, "MD5")), index)
            secret = js_string(ctx.param("secret", index, ""))
            return _encode(hmac.new(secret.encode("utf-8"), data, name).digest(), encoding, index)
        if action == "sign":
            algorithm = js_string(ctx.param("algorithm", index, ""))
            private_key = js_string(ctx.param("privateKey", index, ""))
            return _encode(sign(data, algorithm, private_key, index), encoding, index)
        raise NodeError(f"Unknown action '{action}'", item_index=index)
