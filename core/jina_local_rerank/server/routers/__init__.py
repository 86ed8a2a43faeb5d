"""The app's routes, one ``APIRouter`` per API: ``jina`` (``POST /v1/rerank``, which Cohere v1 clients speak too),
``cohere`` (``POST /v2/rerank``), ``tei`` (``POST /rerank``, ``GET /info``) and ``service`` (``GET /v1/models``,
the probes and the metrics). Handlers read what they share from ``request.app.state`` (set by
:func:`~jina_local_rerank.server.app.create_app`)."""
