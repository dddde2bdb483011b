"""gst-rtmp2-server: an RTMP server in Python that hands on every frame."""

__version__ = "0.1.0"
