"""The progress line `verbose=True` shows while a fit runs (and the jobs show while they work)."""
from __future__ import annotations

import sys


class LiveLine:
    """One line of progress updated in place: a display handle in a Jupyter notebook (IPython's
    display), a carriage-return line on ``stream`` (default: stderr) elsewhere. :meth:`show`
    replaces the text; :meth:`end` leaves the last text standing (on a stream, ends the line)."""

    def __init__(self, stream=None, first: str = "sparkopt: starting"):
        self.stream = stream
        self._handle = None
        self._shown = False
        if stream is None:
            try:
                from IPython import get_ipython
                from IPython.display import display

                shell = get_ipython()
                if shell is not None and getattr(shell, "kernel", None) is not None:
                    self._handle = display(first, display_id=True)
            except ImportError:
                pass

    @property
    def in_notebook(self) -> bool:
        return self._handle is not None

    def _stream(self):
        # looked up per call, not bound at construction: pytest's capsys and notebooks swap sys.stderr
        return self.stream or sys.stderr

    def show(self, text: str) -> None:
        if self._handle is not None:
            self._handle.update(text)
        else:
            stream = self._stream()
            stream.write("\r" + text)
            stream.flush()
        self._shown = True

    def end(self, text: str = None) -> None:
        if text is not None:
            self.show(text)
        if self._handle is None and self._shown:
            stream = self._stream()
            stream.write("\n")
            stream.flush()
        self._shown = False


class Progress:
    """Per-iteration progress for `verbose=True`: one live-updated line in a Jupyter notebook
    (IPython's display handle), a carriage-return line on stderr elsewhere."""

    def __init__(self, max_iter: int, stream=None):
        self.max_iter = max_iter
        self.line = LiveLine(stream)

    def __call__(self, row: dict) -> None:
        self.line.show(f"sparkopt: iter {row['iteration']}/{self.max_iter}  objective {row['objective']:.10g}  "
                       f"grad {row['grad_norm']:.2e}  passes {row['passes']:g}  {row['seconds']:.1f}s")
        return None
