"""The OpenAPI 3.1 document of the JSON API (`/api/v1/openapi.json`), written as data.

This module owns the API's contract: every response body `api.py` builds has its schema
here, and the tests validate real responses against it. Schemas are JSON Schema 2020-12 (what
OpenAPI 3.1 uses), so a JSON Schema validator checks them as they are.
"""

from __future__ import annotations

from typing import Any, Final

_NUM: Final = {"type": ["number", "null"]}
_INT: Final = {"type": ["integer", "null"]}
_STR: Final = {"type": ["string", "null"]}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR: Final = _json(_ref("Error"), "An error")
_UNAUTHORIZED: Final = _json(_ref("Error"), "No valid Authorization: Bearer token")
_NOT_FOUND: Final = _json(_ref("Error"), "No such stream or client")
_STREAM_PARAMS: Final = [
    {"name": "app", "in": "path", "required": True, "schema": {"type": "string"}},
    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
]

SCHEMAS: Final[dict[str, Any]] = {
    "Error": _obj({"error": {"type": "string"}}),
    "Track": _obj(
        {
            "kind": {"enum": ["video", "audio"]},
            "track_id": {"type": "integer"},
            "codec": {"type": "string"},
            "width": _INT,
            "height": _INT,
            "fps": _NUM,
            "profile": _STR,
            "level": _STR,
            "bit_depth": _INT,
            "sample_rate": _INT,
            "channels": _INT,
        },
        ["kind", "track_id", "codec"],
    ),
    "Player": _obj(
        {
            "client_id": {"type": "integer"},
            "peer": {"type": "string"},
            "protocol": {"type": "string"},
            "joined": {"type": "number", "description": "Unix time"},
            "video_frames": {"type": "integer"},
            "audio_frames": {"type": "integer"},
            "dropped_frames": {"type": "integer"},
            "skips": {"type": "integer"},
            "bytes_out": {"type": "integer"},
        }
    ),
    "Health": _obj(
        {
            "fps": {**_NUM, "description": "video frames per second of media time"},
            "keyframe_interval": {**_NUM, "description": "seconds"},
            "av_drift_ms": _INT,
            "timestamp_jumps": {"type": "integer"},
            "timestamp_backward": {"type": "integer"},
            "realtime_ratio": {**_NUM, "description": "media time / wall time"},
            "dropped_frames": {"type": "integer"},
        }
    ),
    "Stream": _obj(
        {
            "app": {"type": "string"},
            "name": {"type": "string"},
            "publisher": _obj(
                {
                    "client_id": _INT,
                    "peer": {"type": "string"},
                    "flash_ver": {"type": "string"},
                    # A stream pulled from another server: its URL, query values hidden.
                    "pulled_from": _STR,
                }
            ),
            "started": {"type": "number", "description": "Unix time"},
            "duration": {"type": "number", "description": "seconds"},
            "bytes_in": {"type": "integer"},
            "bytes_out": {"type": "integer"},
            "bitrate_in": {"type": "number", "description": "bits/s over 5 s"},
            "bitrate_out": {"type": "number", "description": "bits/s over 5 s"},
            "frames": _obj(
                {
                    "video": {"type": "integer"},
                    "audio": {"type": "integer"},
                    "keyframes": {"type": "integer"},
                    "data": {"type": "integer"},
                }
            ),
            "tracks": {"type": "array", "items": _ref("Track")},
            "players": {"type": "array", "items": _ref("Player")},
            "recording": _STR,
            "health": _ref("Health"),
            "warnings": {"type": "array", "items": {"type": "string"}},
            "push": {"type": "array", "items": _ref("Push")},
        }
    ),
    "Push": _obj(
        {
            "id": {"type": "integer"},
            "url": {"type": "string", "description": "the target, its stream key hidden"},
            "tracks": {"enum": ["default", "all"]},
            "state": {"enum": ["connecting", "pushing", "backing off", "stopped"]},
            "since": {"type": "number", "description": "Unix time of the last change of state"},
            "error": {**_STR, "description": "why the last connection failed or ended"},
            "bytes": {"type": "integer"},
            "skipped_frames": {
                "type": "integer",
                "description": "messages dropped (to the next keyframe) as the target fell behind",
            },
            "skips": {"type": "integer"},
            "reconnects": {"type": "integer"},
        }
    ),
    "StreamList": _obj({"streams": {"type": "array", "items": _ref("Stream")}}),
    "Client": _obj(
        {
            "id": {"type": "integer"},
            "peer": {"type": "string"},
            "protocol": {"type": "string"},
            "app": {"type": "string"},
            "connected": {"type": "number", "description": "Unix time"},
            "state": {"enum": ["connecting", "connected", "publishing", "playing"]},
            "publishing": {"type": "array", "items": {"type": "string"}},
            "playing": {"type": "array", "items": {"type": "string"}},
        }
    ),
    "ClientList": _obj({"clients": {"type": "array", "items": _ref("Client")}}),
    "Recording": _obj(
        {
            "path": {"type": "string"},
            "app": {"type": "string"},
            "size": {"type": "integer"},
            "duration": {**_NUM, "description": "seconds (the last tag's timestamp)"},
            "modified": {"type": "number", "description": "Unix time"},
            "live": {"type": "boolean"},
        }
    ),
    "RecordingList": _obj({"recordings": {"type": "array", "items": _ref("Recording")}}),
    "Done": _obj({"closed": {"type": "string"}}),
}

DOCUMENT: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {"title": "rtmp2-server", "version": "1"},
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "security": [{}, {"bearer": []}],
    "paths": {
        "/api/v1/streams": {
            "get": {
                "summary": "The live streams",
                "responses": {"200": _json(_ref("StreamList"), "Streams"), "401": _UNAUTHORIZED},
            }
        },
        "/api/v1/streams/{app}/{name}": {
            "parameters": _STREAM_PARAMS,
            "get": {
                "summary": "One live stream",
                "responses": {
                    "200": _json(_ref("Stream"), "The stream"),
                    "401": _UNAUTHORIZED,
                    "404": _NOT_FOUND,
                },
            },
            "delete": {
                "summary": "End the publish (the publisher's connection is closed)",
                "responses": {
                    "200": _json(_ref("Done"), "Ended"),
                    "401": _UNAUTHORIZED,
                    "404": _NOT_FOUND,
                },
            },
        },
        "/api/v1/clients": {
            "get": {
                "summary": "Every connection",
                "responses": {"200": _json(_ref("ClientList"), "Clients"), "401": _UNAUTHORIZED},
            }
        },
        "/api/v1/clients/{id}": {
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
            ],
            "delete": {
                "summary": "Close a connection (kick)",
                "responses": {
                    "200": _json(_ref("Done"), "Closed"),
                    "400": _ERROR,
                    "401": _UNAUTHORIZED,
                    "404": _NOT_FOUND,
                },
            },
        },
        "/api/v1/recordings": {
            "get": {
                "summary": "Recordings on disk",
                "responses": {
                    "200": _json(_ref("RecordingList"), "Recordings"),
                    "401": _UNAUTHORIZED,
                },
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1"}},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format)",
                "responses": {"200": {"description": "Metrics"}, "401": _UNAUTHORIZED},
            }
        },
    },
}


def response_schema(path: str, method: str, status: int) -> dict[str, Any]:
    """The schema of a response, standing alone (with the components it refers to)."""
    op = DOCUMENT["paths"][path][method]
    schema = op["responses"][str(status)]["content"]["application/json"]["schema"]
    return {**schema, "components": DOCUMENT["components"]}
