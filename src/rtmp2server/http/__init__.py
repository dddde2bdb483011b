"""The HTTP side of the server: one aiohttp listener with the JSON API and Prometheus metrics.

`server.HttpServer` is started and stopped by `RTMPServer` when `config.http` is set; `stats`
keeps each live stream's figures, `api` and `metrics` serve them, `openapi` describes the API.
"""
