"""A self-hosted rerank server speaking Jina's ``/v1/rerank``, Cohere's ``/v2/rerank`` and TEI's ``/rerank`` (the
``server`` extra).

Framework-free: ``schemas`` (request/response models and the ``jina_response``/``cohere_v2_response``/
``tei_response`` builders), ``settings`` (served names, auth key, limits, batching: their flags and checks),
``merging`` (requests merged into one scoring call) and ``batcher`` (the asyncio micro-batcher). On FastAPI:
``app`` (``create_app``), ``routers`` (one per API), ``scoring`` (every route's path to the model),
``request_body`` (strict JSON and body checks), ``dependencies`` (the API key), ``middleware``,
``error_responses`` and ``metrics``; ``connections`` (uvicorn's request-read deadline) and ``cli`` (the ``serve``
command). Nothing is imported here, so the core CLI stays usable without FastAPI installed.
"""
