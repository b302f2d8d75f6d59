"""Types of logger/_listen.pyx (the compiled listener; logger/listen.py decides its use)."""

from typing import Any

from picows import WSFrame, WSListener, WSTransport

PICOWS_VERSION: str

class FastListener(WSListener):
    def __init__(self, slow: Any) -> None: ...
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None: ...
