"""Send one Jina-API-shaped rerank request to a running jina-local-rerank server and print the results.

Start a server first (in another terminal; it binds 127.0.0.1:8080 by default):

    jina-local-rerank serve --model /path/to/jina-reranker-v1-tiny-en

then:

    python examples/server_client.py --url http://127.0.0.1:8080

This is the same request you would send to Jina's hosted API (``https://api.jina.ai/v1/rerank``); only the base
URL differs. Pass ``--api-key`` (or set ``$JINA_LOCAL_RERANK_API_KEY``) if the server was started with one.
Prints one line per result, best first: rank, document index, relevance score (0..1) and text.
"""

from __future__ import annotations

import argparse
import os

import httpx

QUERY = "Organic skincare products for sensitive skin"
DOCUMENTS = [
    "Organic skincare for sensitive skin with aloe vera and chamomile.",
    "New makeup trends focus on bold colors and innovative techniques.",
    "Bio-Hautpflege für empfindliche Haut mit Aloe Vera und Kamille.",
    "Sustainable gardening tools and compost solutions.",
    "Sensitive skin-friendly facial cleansers and toners.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the server's base URL")
    parser.add_argument(
        "--api-key", default=os.environ.get("JINA_LOCAL_RERANK_API_KEY"), help="bearer token, if the server needs one"
    )
    parser.add_argument("--model", default=None, help="a served model name (default: the server's)")
    parser.add_argument("--top-n", type=int, default=3, help="results to ask for")
    args = parser.parse_args()

    headers = {"Content-Type": "application/json"}
    if args.api_key:
        headers["Authorization"] = f"Bearer {args.api_key}"
    body = {"query": QUERY, "documents": DOCUMENTS, "top_n": args.top_n, "return_documents": True}
    if args.model:
        body["model"] = args.model
    response = httpx.post(f"{args.url.rstrip('/')}/v1/rerank", headers=headers, json=body, timeout=60)
    if response.is_error:
        raise SystemExit(f"{response.status_code}: {response.text}")
    answer = response.json()
    print(f"model {answer['model']}, {answer['usage']['total_tokens']} tokens")
    for rank, result in enumerate(answer["results"], start=1):
        print(f"{rank}. [{result['index']}] {result['relevance_score']:.4f}  {result['document']['text']}")


if __name__ == "__main__":
    main()
