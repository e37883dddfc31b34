"""Request bodies of the HTTP API, checked before any model or store is asked: a JSON ``{"uri": ...}``, a JSON
``{"uris": {modality: uri}}`` and a ``multipart/form-data`` body of one file per modality. Bad bodies raise
``HTTPException`` with the status and the reason."""

import json

from fastapi import HTTPException


def uri_from_body(body: bytes) -> str:
    """The object URI that a JSON body ``{"uri": ...}`` names, checked before any store is asked.

    Args:
        body: the request body.

    Returns:
        The URI, exactly as sent.

    Raises:
        HTTPException: 400 for malformed JSON, and for a URI that cannot name an object (saying why).
    """
    from jobs.common import storage

    try:
        uri = json.loads(body)["uri"]
        if not isinstance(uri, str) or not uri:
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise HTTPException(400, detail='malformed JSON body: expected {"uri": "<object URI>"}') from None
    try:
        return storage.check_uri(uri, object_key=True)
    except storage.InvalidURI as exc:
        raise HTTPException(400, detail=str(exc)) from None


def uris_from_body(body: bytes) -> dict[str, str]:
    """``{modality: uri}`` from a JSON body ``{"uris": {...}}``, each URI checked as :func:`uri_from_body` does."""
    from jobs.common import storage

    try:
        uris = json.loads(body)["uris"]
        if not isinstance(uris, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in uris.items()):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise HTTPException(400, detail='malformed JSON body: expected {"uris": {"<modality>": "<uri>"}}') from None
    try:
        return {m: storage.check_uri(u, object_key=True) for m, u in uris.items()}
    except storage.InvalidURI as exc:
        raise HTTPException(400, detail=str(exc)) from None


async def multipart_files(body: bytes, content_type: str) -> dict[str, tuple[bytes, str]]:
    """The file parts of a ``multipart/form-data`` body (python-multipart, through Starlette's parser), by field
    name; a part without a file name, or a field sent twice, is the client's error."""
    from starlette.datastructures import Headers, UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def stream():
        yield body

    try:
        form = await MultiPartParser(
            Headers({"content-type": content_type}), stream(), max_files=16, max_fields=16
        ).parse()
    except MultiPartException as exc:
        raise HTTPException(400, detail=f"malformed multipart body: {exc.message}") from None
    files = {}
    for field, value in form.multi_items():
        if not isinstance(value, UploadFile) or not value.filename:
            raise HTTPException(400, detail=f"field {field!r} is not a file with a name (its extension is its kind)")
        if field in files:
            raise HTTPException(400, detail=f"modality {field!r} sent twice")
        files[field] = (await value.read(), value.filename)
    return files
