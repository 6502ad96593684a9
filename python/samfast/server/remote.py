"""Front-end processes before one model process (samfast-server --workers N). Each front end runs
the HTTP app (parsing, validation, routing, the answer's JSON) and hands the model's work to the
model process, which holds the one Core (model, batcher, cache) and serves its methods over a Unix
socket. In one process, a click's HTTP work (1.5-2 ms of interpreter time) and every other
request's share one interpreter lock, so eight concurrent clicks wait for each other there; N front
ends do that work side by side, and the model process's part of a click is one frame in and one out.

Frames are pickles: the socket is in a directory only this user can enter (mkdtemp's 0700), and
only processes this command started connect to it."""
import asyncio
import concurrent.futures
import itertools
import multiprocessing
import os
import pickle
import shutil
import signal
import struct
import sys
import tempfile

from fastapi import HTTPException

from .core import Checks, Core, ModelInfo, ServerConfig

HEADER = struct.Struct("<Q")
# The Core methods a front end calls, and whether each is a coroutine function (awaited in the model
# process's event loop) or blocking (run on its threads).
METHODS = {"predict": True, "known": True, "remember": True, "recall": True, "add_image": False, "add_pixels": False,
           "embedding": False, "everything": False, "health": False, "metrics": False}


def frame(obj) -> bytes:
    data = pickle.dumps(obj, protocol=5)
    return HEADER.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader):
    size, = HEADER.unpack(await reader.readexactly(HEADER.size))
    return pickle.loads(await reader.readexactly(size))


async def serve_core(core: Core, path: str):
    """Serves core's METHODS on a Unix socket at path, each call answered as it finishes (a click does
    not wait behind an upload): a frame (id, method, args) in, (id, ok, result or error) out."""
    loop = asyncio.get_running_loop()
    # (blocking calls wait on the batcher; as many as may be pending, as the app's thread limit)
    threads = concurrent.futures.ThreadPoolExecutor(core.config.max_pending + 8, thread_name_prefix="samfast-call")

    async def call(writer, request_id, method, args):
        try:
            if method not in METHODS:
                raise RuntimeError(f"no method {method!r}")
            function = getattr(core, method)
            result = await function(*args) if METHODS[method] else await loop.run_in_executor(
                threads, lambda: function(*args))
            reply = (request_id, True, result)
        except HTTPException as e:
            reply = (request_id, False, ("http", e.status_code, e.detail, e.headers))
        except (ValueError, MemoryError) as e:  # (the app's handlers answer them: 422, 503)
            reply = (request_id, False, (type(e).__name__, str(e)))
        except Exception as e:  # (a 500 in the front end, as in one process)
            reply = (request_id, False, ("RuntimeError", f"{type(e).__name__}: {e}"))
        if not writer.is_closing():
            writer.write(frame(reply))

    async def connection(reader, writer):
        tasks = set()  # (held until done: the loop keeps only weak references)
        try:
            while True:
                request_id, method, args = await read_frame(reader)
                task = asyncio.create_task(call(writer, request_id, method, args))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # (the front end has gone)
        except asyncio.CancelledError:
            pass  # (this process is stopping; ended quietly, as Python 3.12.1's stream callback fails on a cancelled task)
        finally:
            writer.close()

    return await asyncio.start_unix_server(connection, path)


def error_of(value) -> Exception:
    kind, *rest = value
    if kind == "http":
        status, detail, headers = rest
        return HTTPException(status, detail, headers=headers)
    return {"ValueError": ValueError, "MemoryError": MemoryError}.get(kind, RuntimeError)(rest[0])


class RemoteCore(Checks):
    """A model process's Core as a front end's routes use it: the same methods, blocking ones from
    the app's worker threads and predict awaited, each a call over the socket; the prompts' checks
    are made here (Checks)."""

    def __init__(self, path: str, config: ServerConfig, native: ModelInfo):
        self.path, self.config, self.native = path, config, native
        self._writer = None
        self._connected = None
        self._gone = False  # (the model process has closed the socket)
        self._waiting = {}  # request id -> its future
        self._ids = itertools.count()

    async def _connect(self):
        reader, self._writer = await asyncio.open_unix_connection(self.path)
        asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader):
        try:
            while True:
                request_id, ok, value = await read_frame(reader)
                future = self._waiting.pop(request_id, None)
                if future is not None and not future.done():
                    future.set_result((ok, value))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        self._gone = True
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(HTTPException(503, "the model process has stopped"))
        self._waiting.clear()
        print("samfast-server: the model process has stopped; this front end stops", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # (uvicorn's graceful stop)

    async def open(self):
        """Connects at the app's start, so that a front end notices its model process ending (the
        socket closes) even before its first request, and stops with it."""
        await self.call("health")

    async def call(self, method: str, *args):
        if self._connected is None:
            self._connected = asyncio.ensure_future(self._connect())
        try:
            await asyncio.shield(self._connected)
        except OSError as e:
            self._connected = None  # (the next request tries again)
            raise HTTPException(503, f"the model process is not reachable: {e}") from None
        if self._gone:
            raise HTTPException(503, "the model process has stopped")
        request_id = next(self._ids)
        future = self._waiting[request_id] = asyncio.get_running_loop().create_future()
        self._writer.write(frame((request_id, method, args)))
        try:
            # (the model process answers 504 at request_timeout_s; this bound is for a model process that hangs)
            ok, value = await asyncio.wait_for(future, self.config.request_timeout_s + 30)
        except asyncio.TimeoutError:
            raise HTTPException(504, "the model process did not answer") from None
        finally:
            self._waiting.pop(request_id, None)
        if not ok:
            raise error_of(value)
        return value

    def _blocking(self, method, *args):
        import anyio.from_thread
        return anyio.from_thread.run(self.call, method, *args)

    async def predict(self, image_id, click, started, low_res=True):
        # (started: time.perf_counter(), CLOCK_MONOTONIC, the same clock in every process of a host)
        return await self.call("predict", image_id, click, started, low_res)

    def add_image(self, data, exif_orientation=True, started=None):
        return self._blocking("add_image", data, exif_orientation, started)

    def add_pixels(self, image):
        return self._blocking("add_pixels", image)

    def embedding(self, image_id):
        return self._blocking("embedding", image_id)

    def everything(self, image_id, options):
        return self._blocking("everything", image_id, options)

    async def known(self, image_id):
        return await self.call("known", image_id)

    async def remember(self, key, value):
        return await self.call("remember", key, value)

    async def recall(self, key):
        return await self.call("recall", key)

    def health(self):
        return self._blocking("health")

    def metrics(self):
        return self._blocking("metrics")

    def close(self):
        if self._writer is not None:
            self._writer.close()


def front_end(sock, path, config, native):
    """A front-end process: the app over a RemoteCore, on the listening socket all front ends share."""
    import uvicorn

    from .app import create_app
    app = create_app(config=config, core=RemoteCore(path, config, native))
    # (timeout_keep_alive: see cli.py)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_keep_alive=75)).run(sockets=[sock])


def serve(sam, config: ServerConfig, host: str, port: int, workers: int):
    """The model in this process and `workers` front-end processes answering on host:port, until
    SIGINT or SIGTERM; a front end that ends is replaced."""
    import uvicorn
    core = Core(sam, config)
    directory = tempfile.mkdtemp(prefix="samfast-server-")
    path = os.path.join(directory, "model.sock")
    # The front ends' request metrics, summed by /metrics (prometheus_client's multiprocess mode reads
    # this at its import: the front ends import it after they start, this process already has).
    os.mkdir(os.path.join(directory, "metrics"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(directory, "metrics")
    sock = uvicorn.Config(None, host=host, port=port, log_level="warning").bind_socket()
    native = ModelInfo.of(core.native)
    spawn = multiprocessing.get_context("spawn")

    def start():
        process = spawn.Process(target=front_end, args=(sock, path, config, native), daemon=True)
        process.start()
        return process

    async def run():
        server = await serve_core(core, path)
        processes = [start() for _ in range(workers)]
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
            for i, process in enumerate(processes):
                if not process.is_alive() and not stop.is_set():
                    print(f"samfast-server: front end {process.pid} ended (exit code {process.exitcode}); "
                          "starting another", file=sys.stderr, flush=True)
                    processes[i] = start()
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(10)
        server.close()
    try:
        import uvloop  # (the event loop that carries every frame: uvicorn's choice for the front ends too)
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    try:
        asyncio.run(run())
    finally:
        core.close()
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)
