"""The ``comfyvn_server_ext`` Jupyter server extension (an ``ExtensionApp``)."""

from __future__ import annotations

import os

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Int, Type, Unicode

from comfyvn.workbench import Workbench, get_workbench

from .routes import handlers
from .services import ComfyvnServices


class ComfyvnExtension(ExtensionApp):
    """Serves the ingest, asset and modder-hook API of one comfyvn workspace."""

    name = "comfyvn_server_ext"

    workspace = Unicode("", config=True,
                        help="Workspace folder (default: $COMFYVN_HOME, else the server's working folder).")
    max_workers = Int(8, config=True, help="Threads for blocking work (SQLite, hashing, copies).")
    max_json_bytes = Int(1024 * 1024, config=True, help="Largest JSON request body, in bytes (413 above).")
    max_upload_bytes = Int(0, config=True,
                           help="Largest streamed upload, in bytes; 0 uses the workspace's ingest.max_remote_bytes.")
    ws_ping_seconds = Float(15.0, config=True,
                            help="Seconds between {\"type\": \"ping\"} keep-alive messages on hook WebSockets.")
    ws_max_pending = Int(10_000, config=True,
                         help="Unsent messages after which a slow hook WebSocket client is disconnected.")
    workbench_class = Type(default_value=Workbench, klass=Workbench, config=True,
                           help="The comfyvn.workbench.Workbench subclass that builds the workspace's objects "
                                "(database, bus, registries, queue, webhooks).")

    def initialize_settings(self) -> None:
        root = self.workspace or os.environ.get("COMFYVN_HOME") or None
        workbench = get_workbench(root, create=True, cls=self.workbench_class)
        self.services = ComfyvnServices(
            workbench, max_workers=self.max_workers, max_json_bytes=self.max_json_bytes,
            max_upload_bytes=self.max_upload_bytes, ws_ping_seconds=self.ws_ping_seconds,
            ws_max_pending=self.ws_max_pending)
        self.settings["comfyvn_services"] = self.services
        # kernels started by this server run in the notebook's folder: hand them a relative
        # COMFYVN_HOME as an absolute path, so it means the folder the user typed it in
        if not os.path.isabs(os.environ.get("COMFYVN_HOME") or "/"):
            os.environ["COMFYVN_HOME"] = str(self.services.ws.root)
        # the queue worker and webhook dispatcher start in a worker thread, not on the loop
        self.services.executor.submit(self.services.start)
        self.log.info("comfyvn: serving workspace %s", self.services.ws.root)

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers())

    async def stop_extension(self) -> None:
        services = getattr(self, "services", None)
        if services is not None:
            services.close()
