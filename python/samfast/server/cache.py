"""The server's images and their embeddings, in two tiers bounded in bytes: embeddings on the device
(a click decodes at once) and, past that tier's bound, the least recently used moved to host memory
(a click costs an upload, not an encode); past the host tier's bound (images and host-held
embeddings), the least recently used images are dropped (a click answers 404: upload again)."""
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Optional

import numpy as np


class Entry:
    def __init__(self, predictor, image: np.ndarray):
        self.predictor, self.image = predictor, image
        self.pins = 0  # requests using the predictor: it stays on the device meanwhile


class EmbeddingCache:
    def __init__(self, device_bytes: int, host_bytes: int, embedding_bytes: int, host_embedding_bytes: int):
        self.device_capacity, self.host_capacity = device_bytes, host_bytes
        self.embedding_bytes, self.host_embedding_bytes = embedding_bytes, host_embedding_bytes
        self.device_used = self.host_used = 0
        self.moves = {"to_host": 0, "to_device": 0, "dropped": 0}
        self._entries: "OrderedDict[str, Entry]" = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._entries)

    @contextmanager
    def use(self, key):
        """The entry of `key` with its embedding on the device for the duration, or None if unknown."""
        entry = self.pin(key)
        try:
            yield entry
        finally:
            self.unpin(entry)

    def pin(self, key, wait: bool = True) -> Optional[Entry]:
        """The entry of `key` with its embedding on the device until unpin(entry), or None if unknown.
        With wait False (an event loop's call) it also gives None, at once, where it would wait: for
        another thread's move between the tiers, or to move this embedding itself."""
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            entry = self._entries.get(key)
            if entry is None or (not wait and not entry.predictor.on_device):
                return None
            self._entries.move_to_end(key)
            if not entry.predictor.on_device:
                entry.predictor.to_device()
                self.moves["to_device"] += 1
                self.device_used += self.embedding_bytes
                self.host_used -= self.host_embedding_bytes
                entry.pins += 1
                self._fit()  # (room on the device for it: others may move to the host)
            else:
                entry.pins += 1
            return entry
        finally:
            self._lock.release()

    def unpin(self, entry: Optional[Entry]):
        if entry is not None:
            with self._lock:
                entry.pins -= 1

    def put(self, key, entry: Entry):
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = entry
            self.device_used += self.embedding_bytes
            self.host_used += entry.image.nbytes
            self._fit()

    def _fit(self):
        if self.device_used <= self.device_capacity and self.host_used <= self.host_capacity:
            return  # (the common case, on every click: no walk over the entries)
        # device tier: the least recently used embeddings not in use move to the host
        for key, entry in list(self._entries.items()):
            if self.device_used <= self.device_capacity:
                break
            if entry.predictor.on_device and entry.pins == 0:
                entry.predictor.to_host()
                self.moves["to_host"] += 1
                self.device_used -= self.embedding_bytes
                self.host_used += self.host_embedding_bytes
        # host tier: the least recently used entries are dropped (the newest always stays)
        for key in list(self._entries)[:-1]:
            if self.host_used <= self.host_capacity:
                break
            entry = self._entries.pop(key)
            self.moves["dropped"] += 1
            self.host_used -= entry.image.nbytes
            if entry.predictor.on_device:
                self.device_used -= self.embedding_bytes
            else:
                self.host_used -= self.host_embedding_bytes

    def get_image(self, key) -> Optional[np.ndarray]:
        """The image of `key` (marked as recently used), or None if unknown."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry.image
