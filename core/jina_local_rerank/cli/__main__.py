"""``python -m jina_local_rerank.cli``: the same as the ``jina-local-rerank`` command."""

import sys

from . import main

sys.exit(main())
