"""The progress line `verbose=True` shows while a fit runs."""
from __future__ import annotations

import sys


class Progress:
    """Per-iteration progress for `verbose=True`: one live-updated line in a Jupyter notebook
    (IPython's display handle), a carriage-return line on stderr elsewhere."""

    def __init__(self, max_iter: int, stream=None):
        self.max_iter = max_iter
        self.stream = stream
        self._handle = None
        if stream is None:
            try:
                from IPython import get_ipython
                from IPython.display import display

                shell = get_ipython()
                if shell is not None and getattr(shell, "kernel", None) is not None:
                    self._handle = display("sparkopt: starting", display_id=True)
            except ImportError:
                pass

    def __call__(self, row: dict) -> None:
        text = (f"sparkopt: iter {row['iteration']}/{self.max_iter}  objective {row['objective']:.10g}  "
                f"grad {row['grad_norm']:.2e}  passes {row['passes']:g}  {row['seconds']:.1f}s")
        if self._handle is not None:
            self._handle.update(text)
        else:
            # looked up per call, not bound at construction: pytest's capsys and notebooks swap sys.stderr
            stream = self.stream or sys.stderr
            stream.write("\r" + text)
            stream.flush()
        return None
