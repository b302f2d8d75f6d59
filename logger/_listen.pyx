# cython: language_level=3, boundscheck=False, wraparound=False
"""logger._listen: the per-frame fast path of ``logger.connection._Listener``, compiled.

Why Cython here, when the other compiled parts are plain C: picows calls a listener's
``on_ws_frame`` through the Cython vtable when the listener is a Cython subclass of
``WSListener`` (picows' own advice for speed), and through Python's vectorcall with a new
Python frame otherwise. ``bench/loop_path.py`` measures the difference on the daemon's loop
path. Only picows' ``.pxd`` API is used, which is why the build pins picows to one version and
``logger/listen.py`` refuses this module when the installed picows is another one.

``FastListener`` does exactly what ``_Listener.on_ws_frame`` does for the common frame (a
final TEXT frame while no fragmented message is pending): stamp, payload bytes, route (a
protocol-core error costs neither the frame nor the socket), actions, the sink's receive
step; every other frame, and every other callback, is handed to the Python listener it wraps,
which keeps all state. tests/logger/test_listen.py feeds both the same frames.
"""

from picows.picows cimport WSFrame, WSListener, WSMsgType, WSTransport
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec

PICOWS_VERSION = PICOWS_BUILT_WITH  # set by setup.py: the picows this was compiled against


cdef class FastListener(WSListener):
    """Wraps a ``logger.connection._Listener`` (``slow``); see the module docstring."""

    cdef object slow, route, receive, feed, conn

    def __init__(self, slow):
        self.slow = slow
        self.route = slow._on_message
        self.receive = slow._receive
        self.feed = slow._feed
        self.conn = slow.conn

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        cdef timespec t
        if frame.msg_type != WSMsgType.TEXT or not frame.fin or self.slow._frag is not None:
            self.slow.on_ws_frame(transport, frame)
            return
        clock_gettime(CLOCK_REALTIME, &t)  # time.time_ns()
        ts = <long long>t.tv_sec * 1000000000 + t.tv_nsec
        raw = frame.get_payload_as_bytes()
        try:
            route = self.route(raw)
        except Exception:  # a protocol-core bug must not cost the frame or the socket
            route = self.slow._route_failed(raw)
        if self.feed.actions:  # markers this frame revealed (a GAP) go before it
            self.conn.run_actions(ts)
        self.receive(route, ts, raw)

    cpdef on_ws_connected(self, WSTransport transport):
        self.slow.on_ws_connected(transport)

    cpdef on_ws_disconnected(self, WSTransport transport):
        self.slow.on_ws_disconnected(transport)

    cpdef pause_writing(self):
        self.slow.pause_writing()

    cpdef resume_writing(self):
        self.slow.resume_writing()
