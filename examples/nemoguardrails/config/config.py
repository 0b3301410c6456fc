"""Enables the vlmguard rails: NeMo Guardrails calls init(app) when it loads this folder."""

from nemoguardrails_vlmguard import register


def init(app):
    register(app)
