"""BentoML's own ceiling for the serving benchmark: a service with the deployed service's
BentoML settings (conf/deploy/default.yaml: workers, access log, tracing, connection
recycling; frozen GC) whose endpoint parses the JSON body and answers a small fixed JSON
document. No model, no adaptive batching, no validation: what BentoML itself costs per
request, to set the deployed service's figures against.

    BENTOML_HOME=/tmp/b bentoml serve bench.bentoml_floor:BentoMLFloor --port 3001
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import bentoml
from bentoml.validators import ContentType
from omegaconf import OmegaConf

from mlops.serving.middleware import ConnectionRecycling
from mlops.serving.worker import bind_api_method, service_options, settle_garbage_collector

SETTINGS = OmegaConf.load(Path(__file__).parents[1] / "conf" / "deploy" / "default.yaml")


@bentoml.service(
    name="bentoml-floor",
    **service_options(SETTINGS.workers, SETTINGS.access_log, SETTINGS.tracing),
)
class BentoMLFloor:
    def __init__(self) -> None:
        bind_api_method(self)
        settle_garbage_collector()

    @bentoml.api
    async def predict(self, inputs: list) -> Annotated[list, ContentType("application/json")]:
        return [{"label": 0, "samples": len(inputs)}]


if SETTINGS.reconnect_every:
    BentoMLFloor.add_asgi_middleware(ConnectionRecycling, every=SETTINGS.reconnect_every)
