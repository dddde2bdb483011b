"""Sans-IO RTMP protocol core: bytes in, events and bytes out.

Nothing here imports asyncio, sockets or threads.
"""
