"""The Open Inference Protocol over gRPC (KServe's ``inference.GRPCInferenceService``), for Triton
and KServe clients (``tritonclient.grpc``): one more front door, served by ``grpc.aio`` on the
same event loop as REST, when ``MNIST_AE_GRPC_PORT`` is set.

Each call decodes its message, runs the dataplane that REST's /v2 routes share
(service/dataplane.py: the guard ``ServiceState.admit``, the memory budget, the micro-batcher, the
scoring), and encodes the answer; outputs are always raw (``raw_output_contents``), as Triton
answers. The service's errors are mapped to gRPC status codes in one place, :func:`status_of`:
bad shape, dtype or values INVALID_ARGUMENT, unknown model NOT_FOUND, not ready or draining
UNAVAILABLE, queue or memory full and too large RESOURCE_EXHAUSTED, no or a wrong API key
(``authorization: Bearer <key>`` in the metadata) UNAUTHENTICATED.

The standard health service (``grpc.health.v1``) answers SERVING once the model is warm and
NOT_SERVING from the drain on, for Kubernetes' gRPC probes. From the drain on, inference calls are
answered UNAVAILABLE (a gRPC client retries those elsewhere), while calls in flight finish; at the
end of the drain the server stops, waiting for what is left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from service import dataplane
from service.access import check_api_key
from service.budget import Held, request_bytes
from service.codecs.oip import DTYPES, MODEL_NAME, Inference, Scalar, check_inference, check_input_names
from service.errors import (
    APIError,
    Forbidden,
    InferenceFailed,
    InvalidInput,
    NotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
)
from service.logs import request_id_for, request_id_var
from service.oip_grpc import predict_v2_pb2 as pb
from service.state import ServiceState
from service.wire import REQUEST_ID_HEADER

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"  # the protocol's service, whatever our .proto's package
REQUEST_ID_KEY = REQUEST_ID_HEADER.lower()  # gRPC metadata keys are lower-case
_STATUS_OF: dict[type[APIError], grpc.StatusCode] = {
    Unauthorized: grpc.StatusCode.UNAUTHENTICATED,
    Forbidden: grpc.StatusCode.PERMISSION_DENIED,
    NotFound: grpc.StatusCode.NOT_FOUND,
    NotReady: grpc.StatusCode.UNAVAILABLE,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    RequestTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    InferenceFailed: grpc.StatusCode.INTERNAL,
}
# the HTTP status each gRPC call is counted under in the request metrics, as REST's
_OK = 200


def status_of(error: APIError) -> grpc.StatusCode:
    """The gRPC status code for one of the service's errors: anything else about the request is INVALID_ARGUMENT."""
    for kind in type(error).__mro__:
        code = _STATUS_OF.get(kind)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL if error.status_code >= 500 else grpc.StatusCode.INVALID_ARGUMENT


def _authorization(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            return value
    return None


# --- decoding -----------------------------------------------------------------------------------


def _parameter(value: pb.InferParameter) -> Scalar:
    choice = value.WhichOneof("parameter_choice")
    if choice == "bool_param":
        return value.bool_param
    if choice == "int64_param":
        return value.int64_param
    return value.string_param


def _tensor(request: pb.ModelInferRequest) -> np.ndarray:
    """The one input's array, of the shape it declares, from raw bytes or typed contents."""
    tensor = request.inputs[0]
    dtype = DTYPES.get(tensor.datatype)
    if dtype is None or dtype == np.bool_:
        raise InvalidInput(f"input '{tensor.name}' has datatype {tensor.datatype}; expected UINT8 or FP32")
    shape = tuple(tensor.shape)
    if any(d < 0 for d in shape) or not shape:
        raise InvalidInput(f"input '{tensor.name}' has shape {list(shape)}; every dimension must be given")
    count = int(np.prod(shape, dtype=np.int64))
    if request.raw_input_contents:
        if tensor.HasField("contents"):
            raise InvalidInput(f"input '{tensor.name}' has both contents and raw_input_contents")
        if len(request.raw_input_contents) != 1:
            raise InvalidInput(f"{len(request.raw_input_contents)} raw_input_contents for 1 input")
        raw = request.raw_input_contents[0]
        if len(raw) != count * dtype.itemsize:
            raise InvalidInput(
                f"input '{tensor.name}': {len(raw)} raw bytes; shape {list(shape)} of {tensor.datatype} "
                f"needs {count * dtype.itemsize}"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    values: Any = tensor.contents.uint_contents if dtype == np.uint8 else tensor.contents.fp32_contents
    if len(values) != count:
        field = "uint_contents" if dtype == np.uint8 else "fp32_contents"
        raise InvalidInput(f"input '{tensor.name}': {len(values)} values in contents.{field} for shape {list(shape)}")
    if dtype == np.uint8:
        wide = np.asarray(values, dtype=np.uint32)
        if wide.size and wide.max() > 255:
            raise InvalidInput(f"input '{tensor.name}': UINT8 values must be 0..255")
        return wide.astype(np.uint8).reshape(shape)
    return np.asarray(values, dtype=np.float32).reshape(shape)


def read_infer_request(request: pb.ModelInferRequest, state: ServiceState) -> Inference:
    """A ModelInferRequest -> a checked inference, by the same checks as REST's /v2."""
    check_input_names([i.name for i in request.inputs])
    tensor = request.inputs[0]
    requested = {o.name: True for o in request.outputs} if request.outputs else None
    parameters = {key: _parameter(value) for key, value in request.parameters.items()}
    return check_inference(
        request.id or None,
        tensor.name,
        tensor.datatype,
        _tensor(request),
        requested,
        parameters,
        default_binary=True,
        model=dataplane.model_limits(state),
    )


# --- encoding -----------------------------------------------------------------------------------

_DATATYPE_OF = {np.dtype(np.float32): "FP32", np.dtype(np.bool_): "BOOL"}


def infer_response(inference: Inference, outputs: dict[str, np.ndarray], version: str) -> pb.ModelInferResponse:
    """The outputs asked for, each raw (little-endian, row-major), in the order asked."""
    response = pb.ModelInferResponse(model_name=MODEL_NAME, model_version=version, id=inference.id or "")
    for name in inference.outputs:
        array = np.ascontiguousarray(outputs[name])
        response.outputs.add(name=name, datatype=_DATATYPE_OF[array.dtype], shape=array.shape)
        response.raw_output_contents.append(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    return response


# --- the calls ----------------------------------------------------------------------------------


class InferenceService:
    """The six calls; each raises the service's errors, answered by :func:`_handler`."""

    def __init__(self, state: ServiceState, server_version: str) -> None:
        self.state = state
        self.server_version = server_version

    async def server_live(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.state.routable)

    async def model_ready(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        dataplane.served_model(self.state, request.name, request.version)
        return pb.ModelReadyResponse(ready=self.state.routable)

    async def server_metadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=dataplane.SERVER_NAME, version=self.server_version, extensions=dataplane.EXTENSIONS
        )

    async def model_metadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        check_api_key(_authorization(context), self.state.settings.api_key)
        metadata = dataplane.model_metadata(dataplane.served_model(self.state, request.name, request.version))
        return pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=metadata["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in metadata["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in metadata["outputs"]],
        )

    async def model_infer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        state = self.state
        batcher = state.admit(_authorization(context))
        if state.draining:
            raise NotReady("the server is draining; retry on another", headers={"retry-after": "1"})
        checkpoint = dataplane.served_model(state, request.model_name, request.model_version)
        held = Held(state.budget)  # as the request layer holds a REST body's bytes
        if not held.take(request_bytes(request.ByteSize())):
            raise held.overloaded()
        try:
            with state.traced("decode"), batcher.arrival():
                inference = read_infer_request(request, state)
            outputs = await dataplane.infer(state, inference)
            with state.traced("encode"):
                return infer_response(inference, outputs, dataplane.version_of(checkpoint))
        finally:
            held.release()


Call = Callable[[Any, Any], Awaitable[Message]]


def _handler(
    state: ServiceState, method: str, call: Call, request_type: type[Message], response_type: type[Message]
) -> grpc.RpcMethodHandler[Any, Any]:
    route = f"/{SERVICE}/{method}"

    async def answer(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        metadata = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
        request_id = request_id_for(metadata.get(REQUEST_ID_KEY, ""))
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))  # as REST's X-Request-ID header
        token = request_id_var.set(request_id)
        try:
            if state.tracing is None:
                return await answer_call(request, context)
            attributes = {"rpc.system": "grpc", "rpc.method": method, "mnist_ae.request_id": request_id}
            with state.tracing.request(method, metadata, attributes):
                return await answer_call(request, context)
        finally:
            request_id_var.reset(token)

    async def answer_call(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        started = time.perf_counter()
        status = _OK
        state.metrics.in_flight.inc()
        try:
            return await call(request, context)
        except APIError as exc:
            status, code, message = exc.status_code, status_of(exc), exc.message
        except Exception:
            log.exception("%s failed", route)
            status, code, message = 500, grpc.StatusCode.INTERNAL, "internal error"
        finally:
            state.metrics.in_flight.dec()
            state.metrics.observe_request(route, "GRPC", status, time.perf_counter() - started)
        if status >= 500 or state.settings.access_log == "all":
            log.info("%s %s: %s", route, code.name, message)
        await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(
        answer, request_deserializer=request_type.FromString, response_serializer=response_type.SerializeToString
    )


def handlers(state: ServiceState, server_version: str) -> grpc.GenericRpcHandler:
    service = InferenceService(state, server_version)
    calls: dict[str, tuple[Call, type[Message], type[Message]]] = {
        "ServerLive": (service.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
        "ServerReady": (service.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
        "ModelReady": (service.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
        "ServerMetadata": (service.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
        "ModelMetadata": (service.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
        "ModelInfer": (service.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
    }
    return grpc.method_handlers_generic_handler(
        SERVICE, {name: _handler(state, name, *call) for name, call in calls.items()}
    )


class GrpcPortUnavailable(RuntimeError):
    """The gRPC port is taken by another program (or the host is not this machine's)."""


class GrpcServer:
    """The gRPC server of one process: started once the model is warm, NOT_SERVING from the drain on,
    stopped at the end of the lifespan."""

    def __init__(self, state: ServiceState, server_version: str) -> None:
        settings = state.settings
        assert settings.grpc_port is not None
        limit = settings.max_body_bytes  # the REST body limit, for messages either way
        self.server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", -1)]
        )
        self.server.add_generic_rpc_handlers((handlers(state, server_version),))
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        # several worker processes each bind the port: SO_REUSEPORT, gRPC's default on Linux
        self.address = f"{settings.grpc_host}:{settings.grpc_port}"
        try:
            self.port = self.server.add_insecure_port(self.address)
        except RuntimeError:
            raise GrpcPortUnavailable(f"cannot start: the gRPC port {self.address} cannot be bound (in use?)") from None

    async def start(self) -> None:
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self.server.start()
        log.info("gRPC (Open Inference Protocol) on %s", self.address)

    async def drain(self) -> None:
        """From the drain on: health NOT_SERVING (inference calls are refused by the service itself)."""
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls, wait up to ``grace_s`` for those in flight."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
