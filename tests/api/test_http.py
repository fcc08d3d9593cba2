"""The HTTP layer around the app: waitress' limits, OPTIONS, and a database that is down."""

from __future__ import annotations

import base64
import json

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.app import max_body_bytes
from api.server import JsonErrorChannel, create
from clipmod.settings import Settings
from tests.api.conftest import auth

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


# -- OPTIONS and an unreachable database, through Flask -------------------------------------------


@pytest.mark.parametrize("path", ["/v1/items", "/v1/items/x", "/healthz"])
def test_options_is_204_with_allow_and_no_key(client: FlaskClient, path: str) -> None:
    resp = client.options(path)
    assert resp.status_code == 204 and resp.data == b""
    assert "Content-Type" not in resp.headers
    assert "GET" in resp.headers["Allow"] and "OPTIONS" in resp.headers["Allow"]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://clipmod@127.0.0.1:1/clipmod?connect_timeout=2",
        "sqlite:////nonexistent/dir/x.db",
    ],
)
def test_database_down_is_503_with_retry_after(settings: Settings, url: str) -> None:
    from api import create_app
    from clipmod import settings as settings_mod

    down = settings_mod.load(
        {"CLIPMOD_DATA_DIR": str(settings.data_dir), "CLIPMOD_DATABASE_URL": url}
    )
    app = create_app(down)
    try:
        resp = app.test_client().post(
            "/v1/items", json={"text": "hello"}, headers=auth("cm_abc_def")
        )
    finally:
        app.extensions["clipmod"].engine.dispose()
    assert resp.status_code == 503
    assert resp.get_json()["error"]["code"] == "database_unavailable"
    assert resp.headers["Retry-After"].isdigit()
