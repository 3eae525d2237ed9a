"""/v1/files and /v1/batches in OpenAI's shapes. Another tenant's id is a 404, as an unknown one."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from batches import processing, tasks
from batches.api.serializers import BatchCreateSerializer, FileUploadSerializer
from batches.api.shapes import batch_object, file_object
from batches.models import Batch, File, FilePurpose
from budgets import audit, roles
from sentinel_site import openai_ids
from sentinel_site.errors import ApiError, not_found

FILE = OpenApiResponse(OpenApiTypes.OBJECT, description="A file object.")
BATCH = OpenApiResponse(OpenApiTypes.OBJECT, description="A batch object.")
LIST = OpenApiResponse(OpenApiTypes.OBJECT, description="A list page: data, first_id, last_id, has_more.")
NOT_FOUND = OpenApiResponse(OpenApiTypes.OBJECT, description="No such object (or not yours).")


def _file(request, file_id: str, *, content: bool = False) -> File:
    files = File.objects.filter(tenant=request.user.tenant, id=openai_ids.parse("file-", file_id, "file"))
    found = (files if content else files.defer("content")).first()  # up to SENTINEL_FILE_MAX_BYTES: read only to send it
    if found is None:
        raise not_found("file")
    return found


def _batch(request, batch_id: str) -> Batch:
    found = Batch.objects.filter(tenant=request.user.tenant, id=openai_ids.parse("batch_", batch_id, "batch")).first()
    if found is None:
        raise not_found("batch")
    return found


class FilesView(APIView):
    """Upload a batch input file; list your files."""

    required_scopes = {"GET": roles.TURNS_READ, "POST": roles.TURNS_EXECUTE}
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        operation_id="files_create",
        summary="Upload a file",
        description="A JSONL batch input file (`purpose=batch`), at most SENTINEL_FILE_MAX_BYTES bytes and "
        "SENTINEL_BATCH_MAX_LINES lines, UTF-8. Lines are checked when a batch uses the file: a bad line goes to the "
        "batch's error file.",
        request={"multipart/form-data": FileUploadSerializer},
        responses={200: FILE, 400: OpenApiResponse(OpenApiTypes.OBJECT), 413: OpenApiResponse(OpenApiTypes.OBJECT)},
        tags=["files"],
    )
    def post(self, request):
        serializer = FileUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = serializer.validated_data["file"]
        limit = settings.SENTINEL["FILE_MAX_BYTES"]
        if upload.size > limit:
            raise ApiError(413, f"The file is larger than {limit} bytes.", param="file", code="file_too_large")
        content = upload.read()
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "The file must be UTF-8 text (JSONL).", param="file", code="invalid_file") from None
        lines = sum(1 for line in text.splitlines() if line.strip())
        if lines > settings.SENTINEL["BATCH_MAX_LINES"]:
            raise ApiError(
                400,
                f"The file has {lines} lines; at most {settings.SENTINEL['BATCH_MAX_LINES']} are taken.",
                param="file",
                code="too_many_lines",
            )
        file = File.objects.create(
            tenant=request.user.tenant,
            purpose=FilePurpose.BATCH,
            filename=(upload.name or "upload.jsonl")[:255],
            bytes=len(content),
            content=content,
        )
        return Response(file_object(file))

    @extend_schema(
        operation_id="files_list", summary="List files", parameters=openai_ids.PAGE_PARAMETERS, responses={200: LIST}, tags=["files"]
    )
    def get(self, request):
        files = File.objects.filter(tenant=request.user.tenant).defer("content")
        purpose = request.query_params.get("purpose")
        if purpose:
            files = files.filter(purpose=purpose)
        return Response(openai_ids.page(request, files, "file-", "file", file_object))


class FileView(APIView):
    """Read or delete one file."""

    required_scopes = {"GET": roles.TURNS_READ, "DELETE": roles.TURNS_EXECUTE}

    @extend_schema(operation_id="files_retrieve", summary="Read a file", responses={200: FILE, 404: NOT_FOUND}, tags=["files"])
    def get(self, request, file_id: str):
        return Response(file_object(_file(request, file_id)))

    @extend_schema(
        operation_id="files_delete",
        summary="Delete a file",
        description="A batch that used it keeps its id and its lines; one still validating fails.",
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="{id, object: file, deleted: true}"), 404: NOT_FOUND},
        tags=["files"],
    )
    def delete(self, request, file_id: str):
        file = _file(request, file_id)
        with transaction.atomic():
            file.delete()
            audit.record("file.deleted", actor=audit.actor_for_key(request.user.api_key), tenant_id=request.user.tenant.id, target=file_id)
        return Response({"id": file_id, "object": "file", "deleted": True})


class AnyAccept(BaseContentNegotiation):
    """A file's bytes are what they are, whatever the client accepts (the openai client asks `application/binary`)."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class FileContentView(APIView):
    """A file's bytes."""

    required_scopes = {"GET": roles.TURNS_READ}
    content_negotiation_class = AnyAccept

    @extend_schema(
        operation_id="files_content",
        summary="Read a file's content",
        responses={(200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY), 404: NOT_FOUND},
        tags=["files"],
    )
    def get(self, request, file_id: str):
        file = _file(request, file_id, content=True)
        return HttpResponse(
            bytes(file.content),
            content_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{file.filename}"'},
        )


class BatchesView(APIView):
    """Create a batch; list your batches."""

    required_scopes = {"GET": roles.TURNS_READ, "POST": roles.TURNS_EXECUTE}

    @extend_schema(
        operation_id="batches_create",
        summary="Create a batch",
        description="Runs every line of the input file as a turn of the agent its body names as `model` (budgeted, "
        "audited, with its own events), on the low-priority `batches` queue, at most SENTINEL_BATCH_CONCURRENCY lines at "
        "once in the whole deployment. Answers at once with the batch `validating`; it resumes after any restart without "
        "running a finished line again. Output and error files have one line per `custom_id` between them.",
        request=BatchCreateSerializer,
        responses={200: BATCH, 400: OpenApiResponse(OpenApiTypes.OBJECT), 404: OpenApiResponse(OpenApiTypes.OBJECT)},
        tags=["batches"],
    )
    def post(self, request):
        serializer = BatchCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        input_file = (
            File.objects.filter(tenant=request.user.tenant, id=openai_ids.parse("file-", data["input_file_id"], "file"))
            .defer("content")
            .first()
        )
        if input_file is None:
            raise ApiError(404, "No such file.", param="input_file_id", code="file_not_found")
        if input_file.purpose != FilePurpose.BATCH:
            raise ApiError(400, "The input file must have purpose `batch`.", param="input_file_id", code="invalid_file")
        batch = processing.create(
            tenant=request.user.tenant,
            api_key=request.user.api_key,
            input_file=input_file,
            endpoint=data["endpoint"],
            completion_window=data["completion_window"],
            metadata=data.get("metadata"),
            wake=tasks.start_validation,
        )
        return Response(batch_object(batch))

    @extend_schema(
        operation_id="batches_list", summary="List batches", parameters=openai_ids.PAGE_PARAMETERS, responses={200: LIST}, tags=["batches"]
    )
    def get(self, request):
        return Response(openai_ids.page(request, Batch.objects.filter(tenant=request.user.tenant), "batch_", "batch", batch_object))


class BatchView(APIView):
    """One batch, with its request counts."""

    required_scopes = {"GET": roles.TURNS_READ}

    @extend_schema(operation_id="batches_retrieve", summary="Read a batch", responses={200: BATCH, 404: NOT_FOUND}, tags=["batches"])
    def get(self, request, batch_id: str):
        return Response(batch_object(_batch(request, batch_id)))


class BatchCancelView(APIView):
    """Cancel a batch: nothing more is started; it is `cancelled` once its running lines ended."""

    required_scopes = {"POST": roles.TURNS_EXECUTE}

    @extend_schema(
        operation_id="batches_cancel",
        summary="Cancel a batch",
        description="`cancelling` at once; `cancelled` once the lines already running ended. Their results and the "
        "finished lines' are in the output and error files; lines never started are in the error file as "
        "`batch_cancelled`. Cancelling an ended batch changes nothing.",
        request=None,
        responses={200: BATCH, 404: NOT_FOUND},
        tags=["batches"],
    )
    def post(self, request, batch_id: str):
        batch = processing.cancel(_batch(request, batch_id), wake=lambda b: tasks.wake(b.id))
        return Response(batch_object(batch))
