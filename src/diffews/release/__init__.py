"""The authors' released DiffewS weights: their layout, converting a whole clone, downloading by name."""

from .catalog import AUTHORS_REPOSITORY, RELEASES, Release, downloaded_model, models_dir
from .convert_clone import convert_clone
from .download import download_model

__all__ = ["AUTHORS_REPOSITORY", "RELEASES", "Release", "convert_clone", "download_model", "downloaded_model", "models_dir"]
