"""How `/predict`'s input reads on the OpenAPI page (Swagger UI at `/`, the document at
`/docs.json`): the sample shape in every dimension, the request-size limit, the
named-feature form of a CSV-trained model, and a real example, so "Try it out" sends a
request the service accepts. BentoML describes an array input as nested lists of numbers
of any length, and Swagger's default body for that (`[[0]]`) is refused as mis-shaped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlops.serving.deployment import Deployment

# the largest input magnitude accepted: float32 arithmetic in a network (a product, a
# variance) overflows into NaN answers well before float32's own limit (3.4e38)
INPUT_LIMIT = 1e15
FLOAT32 = {"type": "number", "minimum": -INPUT_LIMIT, "maximum": INPUT_LIMIT}


def rows_schema(deployment: Deployment) -> dict[str, Any]:
    """Samples as nested arrays: exactly the sample shape, 1 to max_request_samples of them."""
    sample: dict[str, Any] = dict(FLOAT32)
    for size in reversed(deployment.input_shape):
        sample = {"type": "array", "items": sample, "minItems": size, "maxItems": size}
    described = (
        f"a batch of samples of shape {deployment.input_shape}; one sample is a batch of one"
    )
    return {
        "type": "array",
        "items": sample,
        "minItems": 1,
        "maxItems": deployment.max_request_samples,
        "description": described,
    }


def records_schema(deployment: Deployment) -> dict[str, Any]:
    """Samples as objects of the model's feature columns (a model trained on a CSV)."""
    return {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {name: dict(FLOAT32) for name in deployment.features},
            "required": list(deployment.features),
        },
        "minItems": 1,
        "maxItems": deployment.max_request_samples,
        "description": "samples as objects of the feature columns, in any order; other keys "
        "(an id) are not read",
    }


def inputs_schema(deployment: Deployment) -> dict[str, Any]:
    """`inputs` as the OpenAPI page shows it; its example is the registered version's own
    input example, as records where the model knows its feature names."""
    if not deployment.features:
        schema = rows_schema(deployment)
        example = list(deployment.example_inputs)
    else:
        schema = {"oneOf": [rows_schema(deployment), records_schema(deployment)]}
        example = [dict(zip(deployment.features, row, strict=True))
                   for row in deployment.example_inputs]  # fmt: skip
    schema["title"] = "Inputs"
    if example:
        schema["example"] = example
    return schema


@dataclass(frozen=True)
class OpenAPIDescription:
    """An `Annotated` marker giving a field this JSON schema where pydantic builds the
    serialization-mode schema, which BentoML renders as OpenAPI. The validation-mode schema
    is left to BentoML: its own client reads the `tensor` type there to encode arrays."""

    schema: dict[str, Any]

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        if handler.mode == "validation":
            return handler(core_schema)
        return dict(self.schema)

    def __hash__(self) -> int:  # pydantic may hash annotations; the dict is not hashable
        return id(self)
