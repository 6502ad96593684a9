"""One thread runs all of the server's model work, so that concurrent requests share passes:
uploads wait a bounded time for others to join one encoder batch, and the clicks of every client
waiting at once (on any images) decode in one ragged batch. Work runs in the order it arrived, a
batch at a time: a click that comes while an encoder batch is still gathering goes first."""
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .. import _samfast


@dataclass
class Click:
    """One predict request's prompt, as the library's Predictor.predict takes it."""
    points: Optional[np.ndarray]      # (N, 2) float32 in image pixels
    labels: Optional[np.ndarray]      # (N,) int32
    box: Optional[np.ndarray]         # (4,) float32
    mask_input: Optional[np.ndarray]  # (1, L, L) float32
    multimask_output: bool
    rle: bool = False                 # answer the masks as COCO RLE strings (made in the model thread)


class Batcher:
    def __init__(self, max_encode_batch: int = 8, max_wait_s: float = 0.005, max_decode_batch: int = 64,
                 on_pass: Optional[Callable[[str, int, float], None]] = None):
        """on_pass(kind, size, seconds) sees every encode and decode pass and its time (the server's
        metrics). Each future gets `began`, the perf_counter() when its pass started."""
        self.max_encode_batch, self.max_wait_s, self.max_decode_batch = max_encode_batch, max_wait_s, max_decode_batch
        self._on_pass = on_pass
        self._encodes, self._decodes, self._other = deque(), deque(), deque()  # (arrival, future, work)
        self._cv = threading.Condition()
        self._closed = False
        self.batches = {"encode": [], "decode": []}  # sizes of the last passes, for tests and metrics
        self._thread = threading.Thread(target=self._loop, name="samfast-batcher", daemon=True)
        self._thread.start()

    def encode(self, model, prepared) -> "Future[_samfast.Predictor]":
        """A PreparedImage -> a Predictor of that one image."""
        return self._put(self._encodes, (model, prepared))

    def predict(self, predictor, click: Click) -> "Future[tuple]":
        """(masks, scores, low-res logits) for a click on a predictor's image (on the device); the
        masks as COCO RLE strings if click.rle."""
        return self._put(self._decodes, (predictor, click))

    def run(self, fn: Callable[[], object]) -> Future:
        """Any other model work, after the clicks waiting before it."""
        return self._put(self._other, fn)

    def close(self):
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join()

    def _put(self, queue, work) -> Future:
        future: Future = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("the server is shutting down")
            queue.append((time.monotonic(), future, work))
            self._cv.notify()
        return future

    def _take(self):
        """The next pass's work, waiting for it; None once closed and drained. Of the work ready, the
        queue whose first request came first goes first (clicks before an encode batch still
        gathering, none starved); an encode batch is ready when full or when its first has waited
        max_wait_s."""
        with self._cv:
            while True:
                now, heads = time.monotonic(), []
                if self._decodes:
                    heads.append((self._decodes[0][0], "decode"))
                if self._other:
                    heads.append((self._other[0][0], "other"))
                wait = None
                if self._encodes:
                    wait = self._encodes[0][0] + self.max_wait_s - now
                    if len(self._encodes) >= self.max_encode_batch or wait <= 0 or self._closed:
                        heads.append((self._encodes[0][0], "encode"))
                if heads:
                    kind = min(heads)[1]
                    if kind == "decode":
                        n = min(len(self._decodes), self.max_decode_batch)
                        return kind, [self._decodes.popleft() for _ in range(n)]
                    if kind == "other":
                        return kind, [self._other.popleft()]
                    n = 1 << (min(len(self._encodes), self.max_encode_batch).bit_length() - 1)  # (as decodes)
                    return kind, [self._encodes.popleft() for _ in range(n)]
                if self._closed and not self._encodes:
                    return None
                self._cv.wait(wait)

    def _loop(self):
        while (taken := self._take()) is not None:
            self._run(*taken)
            taken = None  # (hold no predictor while idle: the thread may outlive its server)

    def _run(self, kind, items):
        # requests that timed out while queued were cancelled: skip them
        items = [(t, f, w) for t, f, w in items if f.set_running_or_notify_cancel()]
        if not items:
            return
        began = time.perf_counter()
        for _, f, _ in items:
            f.began = began
        try:
            if kind == "other":
                items[0][1].set_result(items[0][2]())
            elif kind == "encode":
                self._encode([w for _, _, w in items], [f for _, f, _ in items])
            else:
                self._decode([w for _, _, w in items], [f for _, f, _ in items])
        except BaseException as e:  # (a failure answers its requests; the thread lives on)
            for _, f, _ in items:
                if not f.done():
                    f.set_exception(e)

    def _note_pass(self, kind, size, began):
        self.batches[kind] = self.batches[kind][-99:] + [size]
        if self._on_pass:
            self._on_pass(kind, size, time.perf_counter() - began)

    def _encode(self, works, futures):
        began = time.perf_counter()
        model = works[0][0]
        batch = _samfast.Predictor(model)
        batch.set_prepared_images([prepared for _, prepared in works])
        # Waiting for the device here lets the uploads that come meanwhile gather into the next batch
        # (returning at launch, each pass took the one upload waiting: batches of 1 under 16 clients).
        model.synchronize()
        self._note_pass("encode", len(works), began)
        for i, f in enumerate(futures):
            f.set_result(batch if len(works) == 1 else batch.select(i))

    def _decode(self, works, futures):
        # Clicks of one form (multimask or not, point count, box, mask input) decode together, in
        # batches of a power of two: few distinct shapes, so few CUDA-graph recordings and pooled
        # buffer sizes however the clicks arrive (padding to one form would change the masks).
        forms = {}
        for w, f in zip(works, futures):
            c = w[1]
            form = (c.multimask_output, 0 if c.points is None else len(c.points), c.box is not None,
                    c.mask_input is not None)
            forms.setdefault(form, []).append((w, f))
        for form, group in forms.items():
            while group:
                n, began = 1 << (len(group).bit_length() - 1), time.perf_counter()
                self._decode_group(group[:n], form[0])
                self._note_pass("decode", n, began)
                group = group[n:]

    @staticmethod
    def _decode_group(group, multimask):
        predictors, index = [], {}
        for (p, _), _ in group:
            if id(p) not in index:
                index[id(p)] = len(predictors)
                predictors.append(p)
        try:
            joined = predictors[0] if len(predictors) == 1 else _samfast.Predictor.join(predictors)
            clicks = [c for (_, c), _ in group]
            results = joined.predict_batch([c.points for c in clicks], [c.labels for c in clicks],
                                           [c.box for c in clicks], [c.mask_input for c in clicks],
                                           [index[id(p)] for (p, _), _ in group], multimask, False)
        except (ValueError, RuntimeError, MemoryError):
            # One bad prompt fails its batch: each alone, so that the error reaches its own request.
            for (p, c), f in group:
                try:
                    f.set_result(answers([c], [p.predict(c.points, c.labels, c.box, c.mask_input, multimask, False,
                                                         0)])[0])
                except Exception as e:
                    f.set_exception(e)
            return
        for (_, f), r in zip(group, answers([c for (_, c), _ in group], results)):
            f.set_result(r)


def answers(clicks, results):
    """The clicks' results as their requests take them: the RLE strings of every mask of the pass
    made here at once (on several threads, GIL released) leave each request only the JSON to write."""
    rle = [i for i, c in enumerate(clicks) if c.rle]
    strings = _samfast.masks_to_coco_rle([results[i][0].view(np.uint8) for i in rle]) if rle else []
    results = list(results)
    for i, s in zip(rle, strings):
        results[i] = (s, *results[i][1:])
    return results
