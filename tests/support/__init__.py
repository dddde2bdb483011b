"""Helpers for the end-to-end tests: media, real RTMP clients, a re-splitting proxy, ffprobe, and
the `rtmp2-server` process. Nothing here imports the server; it is driven from the outside."""
