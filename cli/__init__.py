"""fikitctl: the command-line face of fikit (installed from cli/ as the package ``fikitctl``)."""

from importlib import metadata


def _version() -> str:
    # The wheel carries the project's version; a source checkout on PYTHONPATH has no metadata.
    try:
        return metadata.version("fikit")
    except metadata.PackageNotFoundError:
        return "0.1.0+src"


__version__ = _version()
