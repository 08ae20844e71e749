"""Exceptions users see."""


class InputError(ValueError):
    """A user-supplied input (file, image, mask, folder, model) is unusable.

    The message is one line that names the input and the problem; the CLI prints it and exits 2.
    """
