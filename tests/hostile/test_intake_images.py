"""Every class of hostile image through the intake: a 4xx with its stable code, never a 5xx."""

from __future__ import annotations

import base64
import io

import pytest
from flask.testing import FlaskClient

from clipmod.settings import Settings
from tests.conftest import make_settings
from tests.hostile import samples


def post_image(client: FlaskClient, key: str, data: bytes, *, as_json: bool = False):  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {key}"}
    if as_json:
        body = {"image_base64": base64.b64encode(data).decode()}
        return client.post("/v1/items", json=body, headers=headers)
    return client.post(
        "/v1/items",
        data={"file": (io.BytesIO(data), "upload")},
        headers=headers,
        content_type="multipart/form-data",
    )


def error_of(resp) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    body = resp.get_json()
    assert body is not None and set(body) == {"error"}, resp.data[:200]
    assert body["error"]["message"]
    return resp.status_code, body["error"]["code"]


@pytest.mark.parametrize("as_json", [False, True], ids=["multipart", "json"])
@pytest.mark.parametrize("name", sorted(samples.REFUSED))
def test_hostile_images_are_refused_with_their_code(
    client: FlaskClient, api_key: str, name: str, as_json: bool
) -> None:
    build, status, code = samples.REFUSED[name]
    assert error_of(post_image(client, api_key, build(), as_json=as_json)) == (status, code)


@pytest.mark.parametrize("name", sorted(samples.HIGH_BIT_DEPTH))
def test_high_bit_depth_images_are_accepted(client: FlaskClient, api_key: str, name: str) -> None:
    resp = post_image(client, api_key, samples.HIGH_BIT_DEPTH[name]())
    assert resp.status_code == 202, resp.get_json()


def test_a_rotated_photo_is_accepted(client: FlaskClient, api_key: str) -> None:
    assert post_image(client, api_key, samples.oriented_jpeg()).status_code == 202


def test_geometry_limits_follow_the_settings(settings: Settings, api_key: str) -> None:
    from api import create_app

    strict = make_settings(settings.data_dir, max_image_side="500", max_aspect_ratio="1.5")
    app = create_app(strict)
    try:
        client = app.test_client()
        wide = samples.raw_png(300, 150)
        assert error_of(post_image(client, api_key, wide)) == (413, "image_aspect_ratio_too_large")
        big = samples.raw_png(501, 400)
        assert error_of(post_image(client, api_key, big)) == (413, "image_side_too_large")
        assert post_image(client, api_key, samples.raw_png(300, 200)).status_code == 202
    finally:
        app.extensions["clipmod"].engine.dispose()
