"""The HTTP ceiling for the serving benchmark: uvicorn + Starlette, parse the JSON body and
answer a small JSON document, no model. Nothing served on the same stack can be faster.

    python -m uvicorn bench.echo_server:app --port 3001 --no-access-log
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


async def predict(request: Request) -> JSONResponse:
    body = await request.json()
    return JSONResponse([{"label": 0, "samples": len(body["inputs"])}])


async def ready(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/readyz", ready)])
