"""A self-hosted rerank server speaking Jina's ``/v1/rerank`` and TEI's ``/rerank`` (the ``server`` extra).

Modules: ``schemas`` (request/response models and the framework-free ``jina_response``/``tei_response``),
``settings`` (limits, served names, auth key), ``batcher`` (the asyncio micro-batcher), ``app``
(``create_app``) and ``cli`` (the ``serve`` command). Nothing is imported here, so the core CLI stays usable
without FastAPI installed.
"""
