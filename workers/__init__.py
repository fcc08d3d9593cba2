"""The scoring workers: Celery app, batch task, and the CLIP model runtime."""
