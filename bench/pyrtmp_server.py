"""A recording RTMP server built on pyrtmp, as pyrtmp's README ("Quickstart") shows it.

The controller is the README's `RTMP2FLVController` (a `SimpleRTMPController` that writes
each publish to an FLV file with pyrtmp's `FLVFileWriter`), with two changes for the
benchmark: the file goes to `<record-dir>/<app>/<stream>.flv` instead of the script's own
folder, and the file is closed on deleteStream as well as on disconnect. Runs in the bench
venv (bench/.cache/venv), never in the project's.

    python bench/pyrtmp_server.py --host 127.0.0.1 --port 1935 --record-dir rec
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

from pyrtmp import StreamClosedException  # type: ignore[import-untyped]
from pyrtmp.flv import FLVFileWriter, FLVMediaType  # type: ignore[import-untyped]
from pyrtmp.rtmp import (  # type: ignore[import-untyped]
    RTMPProtocol,
    SimpleRTMPController,
    SimpleRTMPServer,
)
from pyrtmp.session_manager import SessionManager  # type: ignore[import-untyped]


class RTMP2FLVController(SimpleRTMPController):  # type: ignore[misc]
    def __init__(self, output_directory: str) -> None:
        self.output_directory = output_directory
        super().__init__()

    async def on_nc_connect(self, session: SessionManager, message: Any) -> None:
        session.app = str(message.command_object.get("app", "_")).strip("/") or "_"
        await super().on_nc_connect(session, message)

    async def on_ns_publish(self, session: SessionManager, message: Any) -> None:
        folder = os.path.join(self.output_directory, getattr(session, "app", "_"))
        os.makedirs(folder, exist_ok=True)
        name = str(message.publishing_name).split("?", 1)[0]
        session.state = FLVFileWriter(output=os.path.join(folder, f"{name}.flv"))
        await super().on_ns_publish(session, message)

    async def on_metadata(self, session: SessionManager, message: Any) -> None:
        session.state.write(0, message.to_raw_meta(), FLVMediaType.OBJECT)
        await super().on_metadata(session, message)

    async def on_video_message(self, session: SessionManager, message: Any) -> None:
        session.state.write(message.timestamp, message.payload, FLVMediaType.VIDEO)
        await super().on_video_message(session, message)

    async def on_audio_message(self, session: SessionManager, message: Any) -> None:
        session.state.write(message.timestamp, message.payload, FLVMediaType.AUDIO)
        await super().on_audio_message(session, message)

    async def on_ns_delete_stream(self, session: SessionManager, message: Any) -> None:
        self._close(session)
        await super().on_ns_delete_stream(session, message)

    async def on_stream_closed(
        self, session: SessionManager, exception: StreamClosedException
    ) -> None:
        self._close(session)
        await super().on_stream_closed(session, exception)

    @staticmethod
    def _close(session: SessionManager) -> None:
        writer = getattr(session, "state", None)
        if isinstance(writer, FLVFileWriter):
            writer.close()
            session.state = None


class RecordingServer(SimpleRTMPServer):  # type: ignore[misc]
    def __init__(self, output_directory: str) -> None:
        self.output_directory = output_directory
        super().__init__()

    async def create(self, host: str, port: int) -> None:
        loop = asyncio.get_event_loop()
        self.server = await loop.create_server(
            lambda: RTMPProtocol(controller=RTMP2FLVController(self.output_directory)),
            host=host,
            port=port,
        )


async def serve(host: str, port: int, record_dir: str) -> None:
    server = RecordingServer(output_directory=record_dir)
    await server.create(host=host, port=port)
    await server.start()
    await server.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1935)
    parser.add_argument("--record-dir", default="recordings")
    args = parser.parse_args()
    # pyrtmp configures DEBUG logging on import; per-connection lines only, but keep the
    # benchmark's log to warnings like the other servers.
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("pyrtmp", "pyrtmp.rtmp", "pyrtmp.session_manager", "__main__"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.makedirs(args.record_dir, exist_ok=True)
    asyncio.run(serve(args.host, args.port, args.record_dir))


if __name__ == "__main__":
    main()
