"""A real GCS-compatible server on 127.0.0.1 for the gs:// tests (the ``gcp-storage-emulator``
package), and the environment that points every client at it.

The clients under ppsn each find the server through their own variable: gcsfs (etils.epath)
``STORAGE_EMULATOR_HOST``, TensorStore (Orbax) ``TENSORSTORE_GCS_HTTP_URL``, ArrayRecord's C++
reader ``CLOUD_STORAGE_EMULATOR_ENDPOINT`` (unset, it tries the real service and waits).
No credentials are needed.
"""

from __future__ import annotations

import logging
import os
import socket

BUCKET = "ppsn-test"  # TensorStore refuses bucket names under 3 characters


def patch_emulator() -> None:
    """Two additions to the emulator. gcsfs renames with ``POST .../o/SRC/moveTo/o/DST`` first;
    the emulator answers 501, which gcsfs retries for ~34 s per object before copying: a
    moveTo route (copy + delete) makes it immediate. And clients that close a connection early
    (TensorStore) no longer print BrokenPipe tracebacks; the listen backlog is larger."""
    import http.server
    import types
    from http import HTTPStatus

    from gcp_storage_emulator import server, settings
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    if getattr(server, "_ppsn_patched", False):
        return

    def move(request, response, storage, *args, **kwargs):
        p = request.params
        try:
            obj = objects._copy(request.base_url, storage, p["bucket_name"], p["object_id"],
                                p["bucket_name"], p["dest_object_id"])
            storage.delete_file(p["bucket_name"], p["object_id"])
            response.json(obj)
        except NotFound:
            response.status = HTTPStatus.NOT_FOUND

    route = (rf"^{settings.API_ENDPOINT}/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)"
             rf"/moveTo/o/(?P<dest_object_id>.*[^/]+)$", {"POST": move})

    # Write preconditions (ifGenerationMatch; 0: the object must not exist), which the emulator
    # ignores: TensorStore's OCDBT (under Orbax) updates its manifest with them, and without
    # them overlapping saves corrupt it ("Malformed StorageGeneration").
    def generation(storage, bucket, name):
        try:
            return str(storage.get_file_obj(bucket, name)["generation"])
        except NotFound:
            return "0"

    def with_precondition(handler, name_of):
        def checked(request, response, storage, *args, **kwargs):
            want = request.query.get("ifGenerationMatch")
            if want:
                try:
                    name = name_of(request)
                except (KeyError, IndexError, TypeError, AttributeError):
                    name = None
                if name is not None and generation(storage, request.params["bucket_name"],
                                                   name) != want[0]:
                    response.status = HTTPStatus.PRECONDITION_FAILED
                    return None
            return handler(request, response, storage, *args, **kwargs)
        return checked

    def upload_name(request):
        if request.query.get("uploadType", [""])[0] == "multipart":
            return request.data["meta"]["name"]
        return request.query["name"][0]

    def media_read(handler):
        def read(request, response, storage, *args, **kwargs):
            if handler is objects.get and request.query.get("alt", [None])[0] != "media":
                return handler(request, response, storage, *args, **kwargs)  # metadata
            return download(request, response, storage, handler, *args, **kwargs)
        return read

    def download(request, response, storage, handler, *args, **kwargs):
        """Media reads say the object's generation (``x-goog-generation``, which TensorStore
        reads) and answer 304 when it is ``ifGenerationNotMatch``."""
        current = generation(storage, request.params["bucket_name"], request.params["object_id"])
        if current != "0":
            response["x-goog-generation"] = current
            response["x-goog-metageneration"] = "1"
            if request.query.get("ifGenerationNotMatch", [None])[0] == current:
                response.status = HTTPStatus.NOT_MODIFIED
                return None
        return handler(request, response, storage, *args, **kwargs)

    wrapped = {objects.download: media_read(objects.download), objects.get: media_read(objects.get),
               objects.insert: with_precondition(objects.insert, upload_name),
               objects.delete: with_precondition(objects.delete,
                                                 lambda r: r.params["object_id"])}
    handlers = [(regex, {m: wrapped.get(h, h) for m, h in methods.items()})
                for regex, methods in server.HANDLERS]
    server.HANDLERS = (route,) + tuple(handlers)

    class Server(http.server.HTTPServer):
        request_queue_size = 128

        def handle_error(self, request, client_address):
            import sys

            if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                super().handle_error(request, client_address)

    server.server = types.SimpleNamespace(HTTPServer=Server,
                                          BaseHTTPRequestHandler=http.server.BaseHTTPRequestHandler)
    server._ppsn_patched = True


def env_for(url: str) -> dict[str, str]:
    return {
        "STORAGE_EMULATOR_HOST": url,
        "TENSORSTORE_GCS_HTTP_URL": url,
        "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "anonymous",  # TensorStore: no credential search
        # gcsfs >= 2026 asks the real Storage Control API for the bucket's layout otherwise
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "FSSPEC_GCS": '{"use_listings_cache": false, "token": "anon"}',
    }


class GcsServer:
    """The emulator in a thread of this process (in memory), with :data:`BUCKET`."""

    def __init__(self):
        from gcp_storage_emulator.server import create_server

        patch_emulator()
        logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)  # 404s at ERROR
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = create_server("127.0.0.1", self.port, in_memory=True,
                                     default_bucket=BUCKET)
        self._saved: dict[str, str | None] = {}

    def start(self) -> "GcsServer":
        self._server.start()
        env = env_for(self.url)
        self._saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # for this process and the commands the tests start
        import fsspec.config

        fsspec.config.conf.setdefault("gcs", {}).update(use_listings_cache=False, token="anon")
        _reset_client_caches()
        return self

    def stop(self) -> None:
        _reset_client_caches()
        self._server.stop()
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _reset_client_caches() -> None:
    """gcsfs and epath keep one filesystem (and its endpoint) per process."""
    from etils.epath.backend import fsspec_backend

    fsspec_backend._get_filesystem.cache_clear()
    import gcsfs

    gcsfs.GCSFileSystem.clear_instance_cache()
