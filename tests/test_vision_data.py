"""Readers for torchvision's on-disk MNIST, Fashion-MNIST and CIFAR-10 files, on tiny fakes.

Every test writes small files in the real formats into ``tmp_path``; none touches the network.
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

import labkit as lk
from labkit.data.vision import (
    FASHION_MNIST_CLASSES,
    LAYOUTS,
    find_vision_files,
    load_vision,
)

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SIZES = {"train": 12, "test": 7}


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _images(n: int, seed: int, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    images.reshape(n, -1)[0, :2] = (0, 255)  # the extremes are always present
    return images


def _labels(n: int, seed: int) -> np.ndarray:
    return (np.arange(n) * 3 + seed) % 10


def write_idx_dataset(root: Path, name: str, *, gz: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MNIST-style files under root/<layout>; returns the arrays written per split."""
    folder = root / LAYOUTS[name]
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        n = SIZES[split]
        images, labels = _images(n, len(split), (28, 28)), _labels(n, len(split))
        for suffix, array, magic in (
            ("images-idx3-ubyte", images, 2051),
            ("labels-idx1-ubyte", labels, 2049),
        ):
            data = _idx_bytes(array, magic)
            path = folder / f"{prefix}-{suffix}"
            if gz:
                with gzip.open(path.with_name(path.name + ".gz"), "wb") as handle:
                    handle.write(data)
            else:
                path.write_bytes(data)
        written[split] = (images, labels)
    return written


def write_cifar(
    root: Path, *, per_batch: int = 4, n_test: int = 3
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CIFAR-10 python batches (protocol 2, the real keys) under root/cifar-10-batches-py."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "test": []}
    files = [(f"data_batch_{i}", "train", per_batch) for i in range(1, 6)] + [("test_batch", "test", n_test)]
    for seed, (filename, split, n) in enumerate(files):
        data = _images(n, 100 + seed, (3072,))
        labels = _labels(n, seed)
        batch = {
            b"batch_label": f"batch {filename}".encode(),
            b"labels": [int(v) for v in labels],
            b"data": data,
            b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
        }
        (folder / filename).write_bytes(pickle.dumps(batch, protocol=2))
        written[split].append((data.reshape(n, 3, 32, 32), labels))
    meta = {
        b"num_cases_per_batch": per_batch,
        b"label_names": [c.encode() for c in CIFAR_NAMES],
        b"num_vis": 3072,
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return {
        s: (np.concatenate([a for a, _ in v]), np.concatenate([b for _, b in v])) for s, v in written.items()
    }


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_datasets_load(tmp_path: Path, name: str, gz: bool) -> None:
    written = write_idx_dataset(tmp_path, name, gz=gz)
    for split in ("train", "test"):
        data = load_vision(name, split, None, root=tmp_path, download=False)
        images, labels = written[split]
        assert data.name == name and data.split == split
        assert data.x.shape == (SIZES[split], 1, 28, 28) and data.x.dtype == torch.float32
        assert data.y.dtype == torch.int64 and data.y.tolist() == labels.tolist()
        assert float(data.x.min()) == 0.0 and float(data.x.max()) == 1.0
        assert torch.allclose(data.x[:, 0] * 255, torch.from_numpy(images).float(), atol=1e-4)
    expected = [str(d) for d in range(10)] if name == "mnist" else FASHION_MNIST_CLASSES
    assert data.classes == expected
    if name == "fashion_mnist":
        assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"


def test_cifar_loads_with_class_names_and_channel_order(tmp_path: Path) -> None:
    written = write_cifar(tmp_path)
    train = load_vision("cifar10", "train", None, root=tmp_path, download=False)
    test = load_vision("cifar10", "test", None, root=tmp_path, download=False)
    assert train.x.shape == (20, 3, 32, 32) and test.x.shape == (3, 3, 32, 32)
    assert train.classes == CIFAR_NAMES
    assert train.y.dtype == torch.int64 and train.y.tolist() == written["train"][1].tolist()
    assert float(train.x.min()) >= 0.0 and float(train.x.max()) <= 1.0
    # Row-major (N, 3072) -> (N, 3, 32, 32): the first 1024 values are the red channel.
    assert torch.equal(train.x * 255, torch.from_numpy(written["train"][0]).float())


def test_n_takes_the_first_examples(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, "mnist")
    full = load_vision("mnist", "train", None, root=tmp_path, download=False)
    part = load_vision("mnist", "train", 5, root=tmp_path, download=False)
    assert len(part) == 5 and torch.equal(part.x, full.x[:5]) and torch.equal(part.y, full.y[:5])
    # More than the files hold: all of them.
    assert len(load_vision("mnist", "train", 10_000, root=tmp_path, download=False)) == SIZES["train"]
    written = write_cifar(tmp_path)
    six = load_vision("cifar10", "train", 6, root=tmp_path, download=False)  # spans two batches
    assert six.y.tolist() == written["train"][1][:6].tolist()
    assert len(six.info["files"]) == 3  # batches.meta, data_batch_1, data_batch_2


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_registry_load_uses_root(tmp_path: Path, name: str) -> None:
    if name == "cifar10":
        write_cifar(tmp_path)
    else:
        write_idx_dataset(tmp_path, name, gz=True)
    data = lk.data.load(name, split="test", root=tmp_path)  # profile size exceeds the files
    assert len(data) == (3 if name == "cifar10" else SIZES["test"])
    assert data.is_image and data.num_classes == 10
    assert len(lk.data.load(name, split="train", n=2, root=tmp_path)) == 2


def test_root_defaults_to_labkit_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_idx_dataset(tmp_path, "mnist")
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path))
    assert len(load_vision("mnist", "test", None)) == SIZES["test"]
    assert len(lk.data.load("mnist", split="test")) == SIZES["test"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mnist", os.path.join("MNIST", "raw", "t10k-images-idx3-ubyte")),
        ("fashion_mnist", os.path.join("FashionMNIST", "raw", "t10k-labels-idx1-ubyte")),
        ("cifar10", os.path.join("cifar-10-batches-py", "test_batch")),
    ],
)
def test_missing_files_explain_what_to_do(tmp_path: Path, name: str, expected: str) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_vision(name, "test", None, root=tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path / expected) in message
    assert "download=True" in message and "LABKIT_DATA" in message
    assert "digits" in message and "signs" in message
    with pytest.raises(FileNotFoundError, match="digits"):
        lk.data.load(name, root=tmp_path)


def test_only_the_missing_files_are_listed(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, "mnist")
    missing = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    missing.unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_vision("mnist", "test", None, root=tmp_path, download=False)
    assert str(missing) in str(info.value)
    assert "t10k-images-idx3-ubyte\n" not in str(info.value)
    # The train split is complete and still loads.
    assert len(load_vision("mnist", "train", None, root=tmp_path, download=False)) == SIZES["train"]


def test_truncated_idx_file_raises(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, "mnist")
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*truncated"):
        load_vision("mnist", "train", None, root=tmp_path, download=False)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="truncated"):
        load_vision("mnist", "train", None, root=tmp_path, download=False)


def test_wrong_magic_raises(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, "fashion_mnist")
    folder = tmp_path / "FashionMNIST" / "raw"
    # Labels where the images should be: magic 2049 instead of 2051.
    (folder / "t10k-images-idx3-ubyte").write_bytes((folder / "t10k-labels-idx1-ubyte").read_bytes())
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte has magic number 2049, expected 2051"):
        load_vision("fashion_mnist", "test", None, root=tmp_path, download=False)


def test_wrong_image_size_and_count_mismatch_raise(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, "mnist")
    folder = tmp_path / "MNIST" / "raw"
    (folder / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((7, 32, 32)), 2051))
    with pytest.raises(ValueError, match=r"shape \(32, 32\), expected \(28, 28\)"):
        load_vision("mnist", "test", None, root=tmp_path, download=False)
    (folder / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((6, 28, 28)), 2051))
    with pytest.raises(ValueError, match="6 images but .* 7 labels"):
        load_vision("mnist", "test", None, root=tmp_path, download=False)


def test_corrupt_gzip_raises(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, "mnist", gz=True)
    path = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz"):
        load_vision("mnist", "test", None, root=tmp_path, download=False)


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (os.getcwd, ())  # harmless, but no CIFAR batch has any business calling it


def test_cifar_pickle_with_code_is_refused(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({b"data": _Payload(), b"labels": []}, protocol=2))
    with pytest.raises(ValueError, match="refusing to load"):
        load_vision("cifar10", "test", None, root=tmp_path, download=False)


def test_cifar_batch_with_wrong_shape_raises(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    bad = {b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}
    path.write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(ValueError, match=r"test_batch.*expected uint8 \(N, 3072\)"):
        load_vision("cifar10", "test", None, root=tmp_path, download=False)


def test_find_files_and_available(tmp_path: Path) -> None:
    assert find_vision_files("mnist", tmp_path) is None
    write_idx_dataset(tmp_path, "mnist", gz=True)
    write_cifar(tmp_path)
    assert find_vision_files("mnist", tmp_path) == tmp_path / "MNIST" / "raw"
    assert find_vision_files("cifar10", tmp_path) == tmp_path / "cifar-10-batches-py"
    assert find_vision_files("fashion_mnist", tmp_path) is None
    status = lk.data.available(root=tmp_path)
    assert status["mnist"].startswith("files found in") and status["cifar10"].startswith("files found")
    assert status["fashion_mnist"].startswith("missing") and str(tmp_path) in status["fashion_mnist"]
    assert status["digits"] and status["signs"] and status["transactions"]
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    assert find_vision_files("cifar10", tmp_path) is None
    assert lk.data.available(root=tmp_path)["cifar10"].startswith("missing")


def test_bad_arguments_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown torchvision data set 'svhn'"):
        load_vision("svhn", "train", None, root=tmp_path, download=False)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_vision("mnist", "val", None, root=tmp_path, download=False)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        load_vision("mnist", "train", 0, root=tmp_path, download=False)
    with pytest.raises(ValueError, match="unknown torchvision data set"):
        find_vision_files("svhn", tmp_path)


def test_download_uses_torchvision_then_our_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    calls: list[tuple[str, bool, bool]] = []

    class FakeMNIST:
        def __init__(self, root: str, *, train: bool, download: bool) -> None:
            calls.append((root, train, download))
            write_idx_dataset(Path(root), "mnist")  # what a real download leaves behind

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    data = load_vision("mnist", "test", None, root=tmp_path, download=True)
    assert calls == [(str(tmp_path), False, True)]
    assert len(data) == SIZES["test"]
    # Files now present: no second download.
    load_vision("mnist", "train", None, root=tmp_path, download=True)
    assert len(calls) == 1


def test_download_errors_are_wrapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    class OfflineCIFAR10:
        def __init__(self, root: str, *, train: bool, download: bool) -> None:
            raise URLError("no route to host")

    class SilentFashion:
        def __init__(self, root: str, *, train: bool, download: bool) -> None:
            pass  # "succeeds" but writes nothing

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", OfflineCIFAR10)
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", SilentFashion)
    with pytest.raises(RuntimeError, match="could not download cifar10.*no route to host") as info:
        load_vision("cifar10", "train", None, root=tmp_path, download=True)
    assert isinstance(info.value.__cause__, URLError)
    with pytest.raises(RuntimeError, match="still missing"):
        lk.data.load("fashion_mnist", root=tmp_path, download=True)
