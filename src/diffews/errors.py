"""Exceptions users see."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class InputError(ValueError):
    """A user-supplied input (file, image, mask, folder, model) is unusable.

    The message is one line that names the input and the problem; the CLI prints it and exits 2.
    """


class WriteError(InputError):
    """A file could not be written (a full disk, permissions): ``"<path>: cannot write (<detail>)"``.

    `detail` is kept apart, so that a caller writing `path` in a staging folder can name the file
    the user will look for instead.
    """

    def __init__(self, path: object, detail: str) -> None:
        super().__init__(f"{path}: cannot write ({detail})")
        self.detail = detail


def one_line(error: InputError) -> InputError:
    """`error` as the one line it was raised with.

    A data-loader worker's `InputError` reaches the main process with the worker's traceback in its
    message ("Caught InputError in DataLoader worker process 0. Original Traceback ..."); its last
    line is the original message.
    """
    lines = [line for line in str(error).splitlines() if line.strip()]
    if len(lines) <= 1:
        return error
    last = lines[-1]
    prefix = f"{InputError.__module__}.{InputError.__name__}: "
    return InputError(last.removeprefix(prefix))


def first_line(error: BaseException, lines: int = 1) -> str:
    """The first line of `error`'s message (at most 200 characters), or its type's name when it is empty;
    the first `lines` non-empty lines, joined by a space, for a message whose first line only announces
    the next (PyTorch's "Error(s) in loading state_dict for ...:")."""
    kept = [line.strip()[:200] for line in str(error).splitlines() if line.strip()][:lines]
    return " ".join(kept) if kept else type(error).__name__


def one_line_errors(batches: Iterable[T]) -> Iterator[T]:
    """`batches` (a data loader's), with an `InputError` raised while producing one made `one_line`."""
    try:
        yield from batches
    except InputError as error:
        raise one_line(error) from None
