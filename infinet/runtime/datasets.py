"""Datasets wherever data is taken: ``--x1``, ``--x2``, ``--train``, ``--test`` and Python.

A dataset *spec* is one of

* ``PATH.npy`` — an array of inputs (no labels);
* ``PATH.npz`` — an archive with ``x`` (inputs) and optionally ``y`` (labels); an
  archive holding a single array is read as ``x``;
* ``digits``, ``digits:train``, ``digits:test`` — scikit-learn's bundled 8×8 grey digit
  images (1,797, no download) as 8×8×1 NHWC images; ``train`` is the first 1,000 in
  scikit-learn's order, ``test`` the other 797;
* ``cifar10:DIR:train`` / ``cifar10:DIR:test`` — the standard ``cifar-10-batches-py``
  pickles in ``DIR`` (or in ``DIR/cifar-10-batches-py``) as 32×32×3 NHWC images.

Any spec may end in a slice, ``SPEC[a:b]`` (e.g. ``digits:train[:500]``), taken after
preprocessing.

Preprocessing is explicit and reported in :attr:`Dataset.preprocessing`:
``.npy``/``.npz`` data is used as stored; ``digits`` and ``cifar10`` are scaled to
[0, 1] (digits: /16, CIFAR: /255) and then standardised per channel with the mean and
standard deviation of their *training* split, as Arora et al. (2019) did for CIFAR-10.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError

DIGITS_TRAIN = 1000
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILES = ("test_batch",)


@dataclass
class Dataset:
    """Inputs ``x`` ([N, ...], float64), labels ``y`` ([N] or None), and how they were made."""

    x: np.ndarray
    y: np.ndarray | None
    name: str
    preprocessing: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.x)

    def describe(self) -> str:
        shape = "x".join(map(str, self.x.shape[1:]))
        kind = "images" if self.x.ndim == 4 else "vectors" if self.x.ndim == 2 else "inputs"
        labels = "" if self.y is None else f", {len(np.unique(self.y))} classes"
        text = f"{self.name}: {len(self.x)} {kind} {shape}{labels}"
        if self.preprocessing:
            text += "; " + "; ".join(self.preprocessing)
        return text


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


_SLICE = re.compile(r"^(?P<base>.*)\[(?P<a>-?\d*):(?P<b>-?\d*)\]$")


def load_dataset(spec, what: str = "data") -> Dataset:
    """Read a dataset spec (see the module docstring), a :class:`Dataset`, or an array."""
    if isinstance(spec, Dataset):
        return spec
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        try:
            arr = np.asarray(spec)
        except Exception as err:  # noqa: BLE001
            raise DataError(f"{what}: cannot be read as an array ({first_line(err)})") from None
        return Dataset(arr, None, "array")
    if not spec.strip():
        raise DataError(f"{what}: empty dataset spec")
    m = _SLICE.match(spec)
    if m and not os.path.exists(spec):
        data = load_dataset(m["base"], what)
        a = int(m["a"]) if m["a"] else None
        b = int(m["b"]) if m["b"] else None
        sl = slice(a, b)
        x = data.x[sl]
        if len(x) == 0:
            raise DataError(f"{what} {spec}: the slice [{m['a']}:{m['b']}] selects no samples "
                            f"(the dataset has {len(data.x)})")
        return Dataset(x, None if data.y is None else data.y[sl], spec,
                       data.preprocessing + [f"samples [{m['a']}:{m['b']}] of {len(data.x)}"])
    head = spec.split(":", 1)[0]
    if head == "digits":
        return load_digits(spec, what)
    if head in ("cifar10", "cifar-10", "cifar"):
        return load_cifar10(spec, what)
    return load_file(spec, what)


# -- .npy / .npz -----------------------------------------------------------------------------

def load_file(path: str, what: str = "data") -> Dataset:
    if not os.path.exists(path):
        hint = ""
        if ":" in path and not os.path.exists(path.split(":", 1)[0]):
            hint = " (dataset specs: FILE.npy, FILE.npz, digits[:train|:test], cifar10:DIR:train|test)"
        raise DataError(f"{what} {path}: no such file{hint}")
    if os.path.isdir(path):
        raise DataError(f"{what} {path}: is a directory, not an array file (for CIFAR-10 use "
                        f"cifar10:{path}:train or cifar10:{path}:test)")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as err:
        raise DataError(f"{what} {path}: cannot read ({err.strerror or err})") from None
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        raise DataError(f"{what} {path}: not a .npy or .npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{what} {path}: not a readable .npy/.npz array file ({first_line(err)})") \
            from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        return Dataset(loaded, None, path)
    with loaded:
        keys = list(loaded.keys())
        if "x" in keys:
            key = "x"
        elif len(keys) == 1:
            key = keys[0]
        else:
            raise DataError(f"{what} {path}: an .npz needs an array named 'x' (and optionally "
                            f"'y' for labels); found: {', '.join(keys) or 'nothing'}")
        x = _npz_member(loaded, key, path, what)
        y = _npz_member(loaded, "y", path, what) if "y" in keys and key == "x" else None
    if y is not None:
        y = _check_labels(y, len(x) if x.ndim else 0, f"{what} {path}: 'y'")
    return Dataset(x, y, path)


def _npz_member(archive, key, path, what):
    try:
        return archive[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise DataError(f"{what} {path}: cannot read array '{key}' ({first_line(err)})") from None


def _check_labels(y, n: int, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1 and y.dtype.kind in "biuf":
        # one-hot (or score) rows: the label is the argmax
        y = np.argmax(y, axis=1)
    elif y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{what}: labels must be a vector [N], got shape {tuple(y.shape)}")
    if len(y) != n:
        raise DataError(f"{what}: has {len(y)} labels for {n} inputs")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise DataError(f"{what}: labels contain NaN or inf")
        if np.all(y == np.round(y)):
            y = y.astype(np.int64)
    if y.dtype.kind not in "biuUSf":
        raise DataError(f"{what}: labels must be numbers or strings, not {y.dtype}")
    return y


# -- scikit-learn's digits -------------------------------------------------------------------

def _standardise(x: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    axes = tuple(range(train.ndim - 1))
    mean = train.mean(axis=axes)
    std = train.std(axis=axes)
    std = np.where(std > 0, std, 1.0)
    return (x - mean) / std, mean, std


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in np.ravel(values)) + ")"


def load_digits(spec: str = "digits", what: str = "data") -> Dataset:
    parts = spec.split(":")
    split = parts[1] if len(parts) > 1 else "all"
    if len(parts) > 2 or split not in ("train", "test", "all"):
        raise DataError(f"{what} {spec}: expected digits, digits:train or digits:test")
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:  # pragma: no cover - a core dependency
        raise DataError(f"{what} {spec}: needs scikit-learn (pip install scikit-learn)") from None
    bunch = sk_load_digits()
    images = bunch.images.astype(np.float64)[..., None] / 16.0   # [1797, 8, 8, 1] in [0, 1]
    labels = bunch.target.astype(np.int64)
    x, mean, std = _standardise(images, images[:DIGITS_TRAIN])
    sel = {"train": slice(0, DIGITS_TRAIN), "test": slice(DIGITS_TRAIN, None),
           "all": slice(None)}[split]
    n = len(images)
    which = {"train": f"the first {DIGITS_TRAIN} of {n} in scikit-learn's order",
             "test": f"the last {n - DIGITS_TRAIN} of {n} in scikit-learn's order",
             "all": f"all {n}"}[split]
    prep = [f"scikit-learn load_digits, {which}",
            "pixels 0..16 scaled to [0, 1]",
            f"standardised per channel with the training split's mean {_fmt(mean)} "
            f"and std {_fmt(std)}"]
    return Dataset(np.ascontiguousarray(x[sel]), labels[sel], spec, prep)


# -- CIFAR-10 (cifar-10-batches-py) ----------------------------------------------------------

#: The element types an array in a CIFAR pickle may have: plain numbers only (the real
#: files hold uint8 images; labels are lists, or integer arrays in re-saved copies).
_PLAIN_DTYPES = frozenset({"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f4", "f8"})


class _Refused(pickle.UnpicklingError):
    pass


class _NDArrayClass:
    """Stands for ``numpy.ndarray`` (only ever an argument of ``_reconstruct``)."""


class _DType:
    """A dtype as a pickle describes it; it becomes a numpy dtype only if plain."""

    def __init__(self, code, align=False, copy=True):
        self.code, self.state = code, None

    def __setstate__(self, state):
        self.state = state

    def resolve(self) -> np.dtype:
        code = self.code.decode("latin1") if isinstance(self.code, bytes) else self.code
        if not isinstance(code, str) or code not in _PLAIN_DTYPES:
            raise _Refused(f"refusing an array of dtype {code!r} (only plain numbers)")
        order = "|"
        if self.state is not None:
            st = self.state
            if not isinstance(st, tuple) or len(st) < 5 or any(x is not None for x in st[2:5]):
                raise _Refused("refusing a structured or sub-array dtype")
            order = st[1].decode("latin1") if isinstance(st[1], bytes) else st[1]
        if order not in ("<", ">", "|", "="):
            raise _Refused(f"refusing a dtype with byte order {order!r}")
        return np.dtype((order if order in "<>" else "") + code)


class _Array:
    """An array as a pickle describes it (``_reconstruct`` + ``__setstate__``); it becomes a
    numpy array, copied out of its bytes, only if its dtype is plain and the bytes fit."""

    def __init__(self):
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def resolve(self) -> np.ndarray:
        st = self.state
        if not isinstance(st, tuple) or len(st) not in (4, 5):
            raise _Refused("an array with a malformed state")
        shape, dtype, fortran, raw = st[-4:]
        return _from_bytes(raw, dtype, shape, "F" if fortran else "C")


class _Scalar:
    def __init__(self, dtype, raw=b""):
        self.dtype, self.raw = dtype, raw

    def resolve(self):
        return _from_bytes(self.raw, self.dtype, (), "C")[()]


def _from_bytes(raw, dtype, shape, order) -> np.ndarray:
    if not isinstance(dtype, _DType):
        raise _Refused("an array without a plain dtype")
    dt = dtype.resolve()
    if not isinstance(raw, (bytes, bytearray)):
        raise _Refused("an array whose data is not raw bytes")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise _Refused("an array with a malformed shape")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count * dt.itemsize != len(raw):
        raise _Refused(f"an array of {count} x {dt.itemsize} bytes holding {len(raw)}")
    return np.frombuffer(bytes(raw), dt).reshape(shape, order=order).copy()


def _reconstruct(cls, shape, typecode):
    if cls is not _NDArrayClass:
        raise _Refused("refusing to reconstruct anything but numpy.ndarray")
    return _Array()


def _frombuffer(buf, dtype, shape, order):
    return _from_bytes(buf, dtype, tuple(shape), order)


def _encode(text, encoding="utf-8", errors="strict"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("refusing _codecs.encode with anything but a latin1 string")
    return text.encode("latin1")


class _SafeUnpickler(pickle.Unpickler):
    """Only what the CIFAR-10 pickles need: dicts, lists, bytes, numbers and arrays of
    plain numbers.  No numpy object is built from the file's state: arrays are described
    by stand-ins, then copied out of their raw bytes with a checked dtype and size."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.multiarray", "scalar"): _Scalar,
        ("numpy._core.multiarray", "scalar"): _Scalar,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("numpy", "ndarray"): _NDArrayClass,
        ("numpy", "dtype"): _DType,
        ("_codecs", "encode"): _encode,
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data "
                                         f"file") from None


def _resolve(obj):
    """Replace the stand-ins by real arrays, checking every one."""
    if isinstance(obj, (_Array, _Scalar)):
        return obj.resolve()
    if isinstance(obj, _DType):
        return obj.resolve()
    if isinstance(obj, dict):
        return {_resolve(k): _resolve(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v) for v in obj)
    if isinstance(obj, (_NDArrayClass, type)) or callable(obj):
        raise _Refused("a data file that holds a class or function")
    return obj


def _cifar_dir(directory: str, what: str, spec: str) -> str:
    if not directory:
        raise DataError(f"{what} {spec}: expected cifar10:DIR:train or cifar10:DIR:test")
    if not os.path.isdir(directory):
        raise DataError(f"{what} {spec}: {directory} is not a directory (it should hold the "
                        f"cifar-10-batches-py files data_batch_1..5 and test_batch)")
    nested = os.path.join(directory, "cifar-10-batches-py")
    if not os.path.exists(os.path.join(directory, "test_batch")) and os.path.isdir(nested):
        return nested
    return directory


def _read_cifar_batch(path: str, what: str, spec: str) -> tuple[np.ndarray, np.ndarray]:
    name = os.path.basename(path)
    if not os.path.exists(path):
        raise DataError(f"{what} {spec}: missing {name} in {os.path.dirname(path)} (expected the "
                        f"cifar-10-batches-py files data_batch_1..5 and test_batch)")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        batch = _resolve(_SafeUnpickler(io.BytesIO(raw), encoding="bytes").load())
    except OSError as err:
        raise DataError(f"{what} {spec}: cannot read {name} ({err.strerror or err})") from None
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise DataError(f"{what} {spec}: {name} is not a CIFAR-10 python batch (cannot unpickle: "
                        f"{first_line(err)})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{what} {spec}: {name} is not a CIFAR-10 python batch (expected a dict, "
                        f"got {type(batch).__name__})")
    batch = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{what} {spec}: {name} has no 'data' and 'labels' entries "
                        f"(found: {', '.join(map(str, batch)) or 'nothing'})")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DataError(f"{what} {spec}: {name}: 'data' must be uint8 [N, 3072] (3x32x32 CHW "
                        f"rows), got {dtype} {shape}")
    try:
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{what} {spec}: {name}: 'labels' must be integers") from None
    if labels.shape != (len(data),):
        raise DataError(f"{what} {spec}: {name}: {labels.size} labels for {len(data)} images")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{what} {spec}: {name}: labels must be 0..9")
    return data, labels


def _cifar_images(data: np.ndarray) -> np.ndarray:
    """uint8 [N, 3072] CHW rows → float64 [N, 32, 32, 3] NHWC in [0, 1]."""
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float64) / 255.0


def load_cifar10(spec: str, what: str = "data") -> Dataset:
    parts = spec.split(":")
    if len(parts) < 3 or parts[-1] not in ("train", "test"):
        raise DataError(f"{what} {spec}: expected cifar10:DIR:train or cifar10:DIR:test")
    split = parts[-1]
    directory = _cifar_dir(":".join(parts[1:-1]), what, spec)
    train = [_read_cifar_batch(os.path.join(directory, f), what, spec) for f in CIFAR_TRAIN_FILES]
    train_x = _cifar_images(np.concatenate([d for d, _ in train]))
    axes = (0, 1, 2)
    mean = train_x.mean(axis=axes)
    std = train_x.std(axis=axes)
    std = np.where(std > 0, std, 1.0)
    if split == "train":
        x, y = train_x, np.concatenate([lab for _, lab in train])
    else:
        data, y = _read_cifar_batch(os.path.join(directory, CIFAR_TEST_FILES[0]), what, spec)
        x = _cifar_images(data)
    x = (x - mean) / std
    prep = [f"CIFAR-10 python batches in {directory} ({split} split, {len(x)} images)",
            "CHW uint8 converted to NHWC, scaled /255 to [0, 1]",
            f"standardised per channel with the training set's mean {_fmt(mean)} and "
            f"std {_fmt(std)}"]
    return Dataset(np.ascontiguousarray(x), y, spec, prep)


# -- identity of inputs (for resumable runs) -------------------------------------------------

def checksum(x: np.ndarray) -> str:
    """sha256 of an array's shape, dtype and bytes (C order)."""
    arr = np.ascontiguousarray(x)
    h = hashlib.sha256()
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(memoryview(arr).cast("B"))
    return "sha256:" + h.hexdigest()
