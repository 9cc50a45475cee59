"""MNIST, Fashion-MNIST and CIFAR-10 read from torchvision's on-disk layouts.

The course runs offline, so these data sets are used only when their files are already on
disk (or when a workshop with internet asks for ``download=True``). The files are read by the
small readers below rather than by torchvision's dataset classes, which check md5 sums of the
full files; torchvision is used only to download.

Layouts (as torchvision writes them) under ``root``:

===============  ======================================================================
``mnist``        ``MNIST/raw/{train,t10k}-images-idx3-ubyte`` and
                 ``MNIST/raw/{train,t10k}-labels-idx1-ubyte`` (or the same names + ``.gz``)
``fashion_mnist`` ``FashionMNIST/raw/`` with the same file names
``cifar10``      ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``
===============  ======================================================================

``root`` defaults (through :func:`labkit.data.load`) to the ``LABKIT_DATA`` environment
variable, else ``<labkit cache>/data``: see :func:`labkit.data.data_root`.

.. warning::
   The CIFAR-10 batches are Python pickles, and unpickling a file can run arbitrary code.
   Only the files in the expected ``cifar-10-batches-py`` folder are ever unpickled, and
   through a restricted unpickler that only rebuilds dicts, lists, bytes, strings, numbers
   and NumPy arrays; still, only put files there that come from a source you trust (the
   official CIFAR-10 archive). A model-hardening course should practise what it preaches.
"""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from labkit.data.base import LabData, data_root

__all__ = ["LAYOUTS", "VISION_DATASETS", "find_vision_files", "load_vision"]

VISION_DATASETS = ("mnist", "fashion_mnist", "cifar10")

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
_CIFAR_META = "batches.meta"

LAYOUTS: dict[str, str] = {
    "mnist": "MNIST/raw",
    "fashion_mnist": "FashionMNIST/raw",
    "cifar10": "cifar-10-batches-py",
}
"""The folder under ``root`` that holds each data set's files."""

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension

_TORCHVISION_CLASS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}

UInt8Array = NDArray[np.uint8]


# --------------------------------------------------------------------------- finding files
def _check_name(name: str) -> None:
    if not isinstance(name, str) or name not in VISION_DATASETS:
        raise ValueError(
            f"unknown torchvision data set {name!r}; expected one of {', '.join(VISION_DATASETS)}"
        )


def _needed(name: str, splits: tuple[str, ...]) -> list[str]:
    """Names of the files a data set needs for ``splits`` (idx names without ``.gz``)."""
    if name == "cifar10":
        return [f for s in splits for f in _CIFAR_FILES[s]] + [_CIFAR_META]
    return [f for s in splits for f in _IDX_FILES[s]]


def _resolve(folder: Path, filename: str, gz_ok: bool) -> Path | None:
    """The plain file if present, else its ``.gz`` version where allowed, else ``None``."""
    plain = folder / filename
    if plain.is_file():
        return plain
    if gz_ok:
        packed = folder / (filename + ".gz")
        if packed.is_file():
            return packed
    return None


def _missing(name: str, folder: Path, splits: tuple[str, ...]) -> list[str]:
    gz_ok = name != "cifar10"
    return [f for f in _needed(name, splits) if _resolve(folder, f, gz_ok) is None]


def find_vision_files(name: str, root: str | os.PathLike[str]) -> Path | None:
    """The folder holding all the files of a torchvision data set, or ``None``.

    Parameters
    ----------
    name:
        ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
    root:
        The data root, laid out as torchvision writes it (see the module docstring). Through
        :func:`labkit.data.available` it defaults to ``LABKIT_DATA`` or the labkit cache.

    Returns
    -------
    pathlib.Path or None
        ``root/MNIST/raw``, ``root/FashionMNIST/raw`` or ``root/cifar-10-batches-py`` when
        every file of both splits is there (idx files plain or ``.gz``), else ``None``.

    Examples
    --------
    >>> find_vision_files("mnist", "/nonexistent") is None
    True
    """
    _check_name(name)
    folder = Path(root) / LAYOUTS[name]
    if not folder.is_dir():
        return None
    return None if _missing(name, folder, ("train", "test")) else folder


# --------------------------------------------------------------------------- idx reader
def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path} is not a readable gzip file ({err}); delete it and fetch it again") from err


def read_idx(path: Path, *, magic: int, shape: tuple[int, ...]) -> UInt8Array:
    """Read an idx file of unsigned bytes (the MNIST format), checking it thoroughly.

    Parameters
    ----------
    path:
        The file, plain or gzip-compressed (``.gz``).
    magic:
        The expected magic number: 2051 for images (3 dimensions), 2049 for labels (1).
    shape:
        The expected size of each item: ``(28, 28)`` for images, ``()`` for labels.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``(count, *shape)``.

    Raises
    ------
    ValueError
        A wrong magic number, item size or file length, naming the file and what was expected.
    """
    raw = _read_bytes(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < 4:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes, expected an idx header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(
            f"{path} has magic number {found}, expected {magic} "
            f"({'images' if magic == IMAGES_MAGIC else 'labels'} in idx format); "
            "is it the right file?"
        )
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes, expected a {header}-byte header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if dims[1:] != shape:
        raise ValueError(f"{path} holds items of shape {dims[1:]}, expected {shape}")
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise ValueError(
            f"{path} has {len(raw)} bytes, expected {expected} for {dims[0]} items of shape "
            f"{shape}: the file is {'truncated' if len(raw) < expected else 'too long'}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _load_idx(folder: Path, split: str, n: int | None) -> tuple[UInt8Array, UInt8Array, list[Path]]:
    image_name, label_name = _IDX_FILES[split]
    image_path = _resolve(folder, image_name, gz_ok=True)
    label_path = _resolve(folder, label_name, gz_ok=True)
    if image_path is None or label_path is None:  # checked by the caller; files may vanish
        raise FileNotFoundError(f"idx files of the {split} split vanished from {folder}")
    images = read_idx(image_path, magic=IMAGES_MAGIC, shape=(28, 28))
    labels = read_idx(label_path, magic=LABELS_MAGIC, shape=())
    if len(images) != len(labels):
        raise ValueError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} "
            "labels; expected the same number"
        )
    if labels.size and int(labels.max()) > 9:
        raise ValueError(f"{label_path} has label {int(labels.max())}, expected labels 0..9")
    if n is not None:
        images, labels = images[:n], labels[:n]
    return images[:, None], labels, [image_path, label_path]


# --------------------------------------------------------------------------- CIFAR reader
class _SafeUnpickler(pickle.Unpickler):
    """Rebuilds only plain containers and NumPy arrays; refuses any other global."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # how protocol 2 stores bytes written by Python 3
            ("copy_reg", "_reconstructor"),
            ("copyreg", "_reconstructor"),
            ("__builtin__", "object"),
            ("builtins", "object"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR-10 batch holds only dicts, lists and arrays"
            )
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[str, Any]:
    """One CIFAR-10 pickle as a dict with ``str`` keys (Python 2 and 3 files alike)."""
    try:
        with open(path, "rb") as handle:
            obj = _SafeUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{path} is not a readable CIFAR-10 pickle ({err})") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _load_cifar(
    folder: Path, split: str, n: int | None
) -> tuple[UInt8Array, UInt8Array, list[str], list[Path]]:
    meta_path = folder / _CIFAR_META
    meta = _unpickle(meta_path)
    names = meta.get("label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise ValueError(f"{meta_path} has no list of 10 'label_names'")
    classes = [_text(c) for c in names]
    images: list[UInt8Array] = []
    labels: list[UInt8Array] = []
    used = [meta_path]
    total = 0
    for filename in _CIFAR_FILES[split]:
        if n is not None and total >= n:
            break
        path = folder / filename
        batch = _unpickle(path)
        if "data" not in batch or "labels" not in batch:
            raise ValueError(f"{path} lacks the 'data' and 'labels' entries of a CIFAR-10 batch")
        data = np.asarray(batch["data"])
        label = np.asarray(batch["labels"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
        if label.shape != (data.shape[0],):
            raise ValueError(f"{path}: {label.shape[0]} labels for {data.shape[0]} images")
        if label.size and (int(label.min()) < 0 or int(label.max()) > 9):
            raise ValueError(f"{path} has labels outside 0..9")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(label.astype(np.uint8))
        used.append(path)
        total += data.shape[0]
    x, y = np.concatenate(images), np.concatenate(labels)
    if n is not None:
        x, y = x[:n], y[:n]
    return x, y, classes, used


# --------------------------------------------------------------------------- loading
def _missing_message(name: str, root: Path, folder: Path, missing: list[str]) -> str:
    gz = "" if name == "cifar10" else " (each may also be gzip-compressed, ending in .gz)"
    listing = "\n".join(f"  {folder / f}" for f in missing)
    return (
        f"{name} files not found. Expected in {folder}{gz}:\n{listing}\n"
        f"Fetch them where internet is available with labkit.data.load({name!r}, download=True) "
        f"(or load_vision({name!r}, ..., download=True)); they go under root={root}. "
        "Set the LABKIT_DATA environment variable (or pass root=) to the folder that already "
        "holds them. Offline, use the data sets that need no files: 'digits' (real handwritten "
        "digits) or 'signs' (generated traffic signs)."
    )


def _download(name: str, root: Path, split: str) -> None:
    """Fetch the files with torchvision; any failure becomes a clear RuntimeError."""
    try:
        import torchvision.datasets as tvd

        cls = getattr(tvd, _TORCHVISION_CLASS[name])
        cls(str(root), train=split == "train", download=True)
    except Exception as err:  # network errors come in many types (URLError, OSError, ...)
        raise RuntimeError(
            f"could not download {name} into {root} with torchvision ({type(err).__name__}: "
            f"{err}). Check the internet connection, or copy the files to "
            f"{root / LAYOUTS[name]} by hand; offline, use 'digits' or 'signs'."
        ) from err


def load_vision(
    name: str,
    split: str,
    n: int | None,
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> LabData:
    """Load MNIST, Fashion-MNIST or CIFAR-10 from torchvision's on-disk layout.

    Parameters
    ----------
    name:
        ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
    split:
        ``"train"`` or ``"test"``.
    n:
        Take the first ``n`` examples (all of them when ``None`` or when the files hold fewer).
    root:
        The data root (see the module docstring for the layout). ``None`` means
        :func:`labkit.data.data_root`: the ``LABKIT_DATA`` environment variable, else
        ``<labkit cache>/data``; :func:`labkit.data.load` always passes that default.
    download:
        When the files of this split are missing, fetch them with torchvision (needs
        internet). Off by default: the course runs offline.

    Returns
    -------
    LabData
        ``x`` float32 in ``[0, 1]`` of shape ``(N, 1, 28, 28)`` or ``(N, 3, 32, 32)``, ``y``
        int64, the class names, and ``info`` with the files read.

    Raises
    ------
    FileNotFoundError
        Files missing and ``download=False``; the message lists the expected paths.
    RuntimeError
        ``download=True`` but the download failed.
    ValueError
        A bad argument, or a corrupt or truncated file (the message names it).
    """
    _check_name(name)
    if split not in _IDX_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
        raise ValueError(f"n must be a positive integer or None (all examples), got {n!r}")
    if root is None:
        base = data_root()
    else:
        base = Path(root)
    folder = base / LAYOUTS[name]
    missing = _missing(name, folder, (split,))
    if missing and download:
        _download(name, base, split)
        missing = _missing(name, folder, (split,))
        if missing:
            raise RuntimeError(
                f"torchvision reported a successful download of {name}, but these files are "
                f"still missing: {', '.join(str(folder / f) for f in missing)}"
            )
    if missing:
        raise FileNotFoundError(_missing_message(name, base, folder, missing))

    if name == "cifar10":
        images, labels, classes, used = _load_cifar(folder, split, n)
    else:
        images, labels, used = _load_idx(folder, split, n)
        classes = list(MNIST_CLASSES if name == "mnist" else FASHION_MNIST_CLASSES)
    x = torch.from_numpy(images.astype(np.float32)).div_(255.0)
    return LabData(
        name=name,
        split=split,
        x=x,
        y=torch.from_numpy(labels.astype(np.int64)),
        classes=classes,
        info={"source": str(folder), "files": [str(p) for p in used]},
    )
