"""The intake API: a Flask app factory and its blueprints."""

from api.app import create_app

__all__ = ["create_app"]
