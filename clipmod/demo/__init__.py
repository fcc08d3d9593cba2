"""The bundled demo model: a small CLIP trained here on a generated image-caption world.

It exists so the service can run and be tested without a model hub; it is not a moderation
model. See ``clipmod/assets/demo-clip/MODEL_CARD.md``.
"""
