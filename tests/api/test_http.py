"""The HTTP layer around the app: waitress' limits and error shape, OPTIONS."""

from __future__ import annotations

import base64
import json

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.app import max_body_bytes
from api.server import JsonErrorChannel, create
from clipmod.settings import Settings

# -- the server's wiring -----------------------------------------------------------------------


def test_waitress_gets_flasks_body_limit_and_the_json_channel(
    app: Flask, settings: Settings
) -> None:
    server = create(app, settings, "127.0.0.1", 0, threads=1)
    try:
        assert app.config["MAX_CONTENT_LENGTH"] == max_body_bytes(settings)
        # waitress refuses `>= max_request_body_size`; Flask refuses `> MAX_CONTENT_LENGTH`.
        assert server.adj.max_request_body_size == max_body_bytes(settings) + 1
        assert server.channel_class is JsonErrorChannel
    finally:
        server.close()


def test_the_body_limit_fits_the_largest_wrapped_base64_image(settings: Settings) -> None:
    raw = base64.b64encode(b"\xff" * settings.max_upload_bytes).decode()
    wrapped = "\r\n".join(raw[i : i + 64] for i in range(0, len(raw), 64))
    body = json.dumps({"image_base64": "data:image/png;base64," + wrapped}).encode()
    assert len(body) < max_body_bytes(settings) - settings.max_text_chars * 4


# -- OPTIONS, through Flask -------------------------------------------


@pytest.mark.parametrize("path", ["/v1/items", "/v1/items/x", "/healthz"])
def test_options_is_204_with_allow_and_no_key(client: FlaskClient, path: str) -> None:
    resp = client.options(path)
    assert resp.status_code == 204 and resp.data == b""
    assert "Content-Type" not in resp.headers
    assert "GET" in resp.headers["Allow"] and "OPTIONS" in resp.headers["Allow"]
