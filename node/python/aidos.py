"""aidos.py - Python client of a local aidos node (standard library only).

ctypes over libaidos.so (include/aidos/client.h): the node's tensor heap is
shared memory, inputs are copied into it once (or not at all for arrays
made with Client.tensor(), which live in the heap), and outputs come back
from it. numpy arrays are accepted and returned when numpy is importable;
without numpy, a tensor is a Tensor(data, dtype, shape) with data any
buffer (bytes, bytearray, array.array, memoryview).

    import aidos
    c = aidos.Client()                       # $AIDOS_SOCKET or the node's default socket
    c.spawn("jarvis", "hey_jarvis_v0.1.onnx", priority=1)
    out = c.infer("jarvis", {"x.1": numpy.zeros((1, 16, 96), numpy.float32)})
    print(out["53"])                         # a numpy array (a copy: the heap is reused)
    print(c.ps(), c.stats(), c.ping(1000))
    c.close()

libaidos.so is found from $AIDOS_LIB, then build/libaidos.so next to this
file's repository, then the system's library path. Errors raise AidosError
(.code: a negative aidos or errno code, str(): the node's one-line message).
"""

import collections
import ctypes
import ctypes.util
import os

try:  # numpy is optional
    if os.environ.get("AIDOS_PY_NO_NUMPY"):
        raise ImportError
    import numpy as _np
except ImportError:
    _np = None

MAX_RANK = 8
Tensor = collections.namedtuple("Tensor", "data dtype shape")

# ONNX TensorProto data types <-> names (numpy spelling) and sizes
_DT = {1: ("float32", 4), 2: ("uint8", 1), 3: ("int8", 1), 6: ("int32", 4),
       7: ("int64", 8), 9: ("bool", 1), 11: ("float64", 8)}
_DT_BY_NAME = {v[0]: k for k, v in _DT.items()}


class AidosError(Exception):
    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code


class _Tensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int32), ("rank", ctypes.c_int32),
                ("dims", ctypes.c_int64 * MAX_RANK), ("data", ctypes.c_void_p)]


class _SpawnOpts(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("model", ctypes.c_char_p), ("priority", ctypes.c_int),
                ("quota_bytes", ctypes.c_uint64), ("deadline_ms", ctypes.c_uint64)]


class _AgentInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * 64), ("model", ctypes.c_char * 256), ("state", ctypes.c_char * 16),
                ("priority", ctypes.c_int32), ("_pad", ctypes.c_uint32),
                ("quota_bytes", ctypes.c_uint64), ("deadline_ms", ctypes.c_uint64),
                ("requests", ctypes.c_uint64), ("errors", ctypes.c_uint64),
                ("mem_bytes", ctypes.c_uint64), ("latency_ns", ctypes.c_uint64)]


class _Stats(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in
                ("agents", "clients", "requests", "errors", "uptime_ms", "heap_bytes", "pool_bytes")]


def _load_lib():
    cands = []
    if os.environ.get("AIDOS_LIB"):
        cands.append(os.environ["AIDOS_LIB"])
    here = os.path.dirname(os.path.abspath(__file__))
    cands.append(os.path.join(here, "..", "..", "build", "libaidos.so"))
    found = ctypes.util.find_library("aidos")
    if found:
        cands.append(found)
    err = None
    for p in cands:
        try:
            return ctypes.CDLL(p)
        except OSError as e:
            err = e
    raise OSError("libaidos.so not found (set AIDOS_LIB): %s" % err)


_lib = _load_lib()
_P = ctypes.POINTER
_lib.aidos_client_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p, _P(ctypes.c_void_p), ctypes.c_char_p,
                                      ctypes.c_size_t]
_lib.aidos_client_close.argtypes = [ctypes.c_void_p]
_lib.aidos_client_close.restype = None
_lib.aidos_client_spawn.argtypes = [ctypes.c_void_p, _P(_SpawnOpts), ctypes.c_char_p, ctypes.c_size_t]
_lib.aidos_client_kill.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
_lib.aidos_client_list.argtypes = [ctypes.c_void_p, _P(_P(_AgentInfo)), _P(ctypes.c_int), ctypes.c_char_p,
                                   ctypes.c_size_t]
_lib.aidos_client_list_free.argtypes = [_P(_AgentInfo)]
_lib.aidos_client_list_free.restype = None
_lib.aidos_client_stats.argtypes = [ctypes.c_void_p, _P(_Stats), ctypes.c_char_p, ctypes.c_size_t]
_lib.aidos_client_ping.argtypes = [ctypes.c_void_p, _P(ctypes.c_uint64)]
_lib.aidos_client_tensor_alloc.argtypes = [ctypes.c_void_p, _P(_Tensor)]
_lib.aidos_client_tensor_free.argtypes = [ctypes.c_void_p, _P(_Tensor)]
_lib.aidos_client_tensor_free.restype = None
_lib.aidos_client_infer.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, _P(_Tensor), _P(ctypes.c_int),
                                    _P(_Tensor), ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
_lib.aidos_client_set_deadline.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
_lib.aidos_client_set_deadline.restype = None
_lib.aidos_strerror.argtypes = [ctypes.c_int]
_lib.aidos_strerror.restype = ctypes.c_char_p


def _check(rc, err):
    if rc:
        msg = err.value.decode(errors="replace") if err is not None and err.value else \
            _lib.aidos_strerror(rc).decode()
        raise AidosError(rc, msg)


class Client:
    """One connection to the local node (use it from one thread at a time)."""

    def __init__(self, socket=None, heap_bytes=0):
        class _Opts(ctypes.Structure):
            _fields_ = [("heap_bytes", ctypes.c_uint64), ("spin_us", ctypes.c_uint32), ("_rsv", ctypes.c_uint32)]
        self._c = ctypes.c_void_p()
        self._keep = []  # heap tensors made by tensor(): freed with the client
        err = ctypes.create_string_buffer(1024)
        o = _Opts(heap_bytes, 0, 0)
        path = socket.encode() if socket else None
        _check(_lib.aidos_client_connect(path, ctypes.byref(o), ctypes.byref(self._c), err, len(err)), err)

    def close(self):
        if self._c:
            _lib.aidos_client_close(self._c)
            self._c = ctypes.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ---- control ----
    def spawn(self, name, model, priority=0, quota=0, deadline_ms=0):
        err = ctypes.create_string_buffer(1024)
        o = _SpawnOpts(name.encode(), os.path.abspath(model).encode(), priority, quota, deadline_ms)
        _check(_lib.aidos_client_spawn(self._c, ctypes.byref(o), err, len(err)), err)

    def kill(self, name):
        err = ctypes.create_string_buffer(1024)
        _check(_lib.aidos_client_kill(self._c, name.encode(), err, len(err)), err)

    def ps(self):
        err = ctypes.create_string_buffer(1024)
        lst = _P(_AgentInfo)()
        n = ctypes.c_int()
        _check(_lib.aidos_client_list(self._c, ctypes.byref(lst), ctypes.byref(n), err, len(err)), err)
        out = []
        for i in range(n.value):
            a = lst[i]
            out.append({"name": a.name.decode(), "model": a.model.decode(), "state": a.state.decode(),
                        "priority": a.priority, "quota_bytes": a.quota_bytes, "deadline_ms": a.deadline_ms,
                        "requests": a.requests, "errors": a.errors, "mem_bytes": a.mem_bytes,
                        "latency_ns": a.latency_ns})
        _lib.aidos_client_list_free(lst)
        return out

    def stats(self):
        err = ctypes.create_string_buffer(1024)
        s = _Stats()
        _check(_lib.aidos_client_stats(self._c, ctypes.byref(s), err, len(err)), err)
        return {n: getattr(s, n) for n, _ in _Stats._fields_}

    def ping(self, count=1):
        """count null requests through the rings; returns their round trips in ns."""
        rtt = ctypes.c_uint64()
        out = []
        for _ in range(count):
            _check(_lib.aidos_client_ping(self._c, ctypes.byref(rtt)), None)
            out.append(rtt.value)
        return out

    def set_deadline(self, seconds):
        """Later requests must start within `seconds` (0: no deadline)."""
        _lib.aidos_client_set_deadline(self._c, int(seconds * 1e9))

    # ---- tensors ----
    def tensor(self, dtype, shape):
        """A numpy array living in the shared heap: infer reads it in place (no copy).
        Valid until close(). Needs numpy."""
        if _np is None:
            raise AidosError(-1002, "Client.tensor needs numpy")
        t = self._alloc(_DT_BY_NAME[_np.dtype(dtype).name], shape)
        self._keep.append(t)
        n = int(_np.prod(shape)) if len(shape) else 1
        buf = (ctypes.c_char * (n * _np.dtype(dtype).itemsize)).from_address(t.data)
        return _np.frombuffer(buf, dtype=dtype).reshape(shape)

    def _alloc(self, dt, shape):
        if len(shape) > MAX_RANK:
            raise AidosError(-1001, "rank %d > %d" % (len(shape), MAX_RANK))
        t = _Tensor(None, dt, len(shape), (ctypes.c_int64 * MAX_RANK)(*shape), None)
        rc = _lib.aidos_client_tensor_alloc(self._c, ctypes.byref(t))
        _check(rc, None)
        return t

    @staticmethod
    def _in_tensor(name, v):
        """(ctypes tensor, object keeping its memory alive)"""
        if _np is not None and isinstance(v, _np.ndarray):
            a = _np.ascontiguousarray(v)
            if a.dtype.name not in _DT_BY_NAME:
                raise AidosError(-1001, "input '%s': dtype %s not supported" % (name, a.dtype))
            t = _Tensor(name.encode(), _DT_BY_NAME[a.dtype.name], a.ndim,
                        (ctypes.c_int64 * MAX_RANK)(*a.shape), a.ctypes.data)
            return t, a
        if isinstance(v, Tensor) or (isinstance(v, tuple) and len(v) == 3):
            data, dtype, shape = v
            dt = _DT_BY_NAME.get(dtype)
            if dt is None:
                raise AidosError(-1001, "input '%s': dtype %s not supported" % (name, dtype))
            mv = memoryview(data).cast("B")
            n = _DT[dt][1]
            for d in shape:
                n *= d
            if mv.nbytes != n:
                raise AidosError(-1001, "input '%s': %d bytes, shape %s of %s needs %d" %
                                 (name, mv.nbytes, tuple(shape), dtype, n))
            buf = (ctypes.c_char * max(n, 1)).from_buffer_copy(mv.tobytes() or b"\0")
            t = _Tensor(name.encode(), dt, len(shape), (ctypes.c_int64 * MAX_RANK)(*shape), ctypes.addressof(buf))
            return t, buf
        raise AidosError(-1001, "input '%s': give a numpy array or Tensor(data, dtype, shape)" % name)

    def infer(self, agent, inputs):
        """Runs agent on inputs ({name: array}); returns {output name: array} (copies)."""
        ins = (_Tensor * max(len(inputs), 1))()
        keep = []
        for i, (k, v) in enumerate(inputs.items()):
            t, obj = self._in_tensor(k, v)
            ins[i] = t
            keep.append(obj)
        outs = (_Tensor * 64)()
        nout = ctypes.c_int()
        err = ctypes.create_string_buffer(1024)
        _check(_lib.aidos_client_infer(self._c, agent.encode(), len(inputs), ins, ctypes.byref(nout), outs, 64,
                                       err, len(err)), err)
        res = {}
        for i in range(nout.value):
            o = outs[i]
            shape = tuple(o.dims[d] for d in range(o.rank))
            dname, size = _DT.get(o.dtype, ("unknown", 1))
            n = size
            for d in shape:
                n *= d
            raw = ctypes.string_at(o.data, n)  # the heap is reused by the next request: copy
            if _np is not None:
                res[o.name.decode()] = _np.frombuffer(raw, dtype=_np.dtype(dname)).reshape(shape).copy()
            else:
                res[o.name.decode()] = Tensor(raw, dname, shape)
        return res
