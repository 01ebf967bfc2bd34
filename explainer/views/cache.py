"""The views' memory of recent work: a slider move that repeats a picture, noise draw or chain finds it here.

Each view keeps a few of its costly intermediates (decoded uploads, noise, strips, the lab's data and heat maps),
bounded by count; the web server calls the views from many threads at once.
"""
from __future__ import annotations

import threading
from collections import OrderedDict


class LRU:
    """A tiny thread-safe LRU cache."""

    def __init__(self, size: int):
        self.size, self.data, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key, make):
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        value = make()
        with self.lock:
            self.data[key] = value
            while len(self.data) > self.size:
                self.data.popitem(last=False)
        return value
