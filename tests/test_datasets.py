"""Dataset specs: .npy, .npz (x, y), scikit-learn's digits, CIFAR-10's python batches."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

import infinet
from infinet.errors import DataError
from infinet.runtime.datasets import checksum, load_dataset

from conftest import EXAMPLES, run_cli


# -- .npy / .npz ---------------------------------------------------------------------------------

def test_npy_and_npz(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 3))
    np.save(tmp_path / "a.npy", x)
    d = load_dataset(str(tmp_path / "a.npy"))
    assert np.array_equal(d.x, x) and d.y is None and d.preprocessing == []
    np.savez(tmp_path / "b.npz", x=x, y=np.array([0, 1, 1, 2, 0]))
    d = load_dataset(tmp_path / "b.npz")
    assert np.array_equal(d.x, x) and list(d.y) == [0, 1, 1, 2, 0]
    np.savez(tmp_path / "c.npz", data=x)           # a single array is x
    assert np.array_equal(load_dataset(str(tmp_path / "c.npz")).x, x)
    np.savez(tmp_path / "onehot.npz", x=x, y=np.eye(3)[[0, 1, 1, 2, 0]])
    assert list(load_dataset(str(tmp_path / "onehot.npz")).y) == [0, 1, 1, 2, 0]
    d = load_dataset(str(tmp_path / "b.npz") + "[1:3]")
    assert np.array_equal(d.x, x[1:3]) and list(d.y) == [1, 1]


@pytest.mark.parametrize("make, message", [
    (lambda p: np.savez(p / "f.npz", a=np.zeros(2), b=np.zeros(2)), "needs an array named 'x'"),
    (lambda p: np.savez(p / "f.npz", x=np.zeros((3, 2)), y=np.zeros(4)), "has 4 labels for 3"),
    (lambda p: np.savez(p / "f.npz", x=np.zeros((3, 2)), y=np.zeros((3, 2, 2))),
     "labels must be a vector"),
    (lambda p: (p / "f.npz").write_bytes(b"PK\x03\x04garbage"), "not a readable"),
    (lambda p: (p / "f.npz").write_bytes(b"hello"), "not a .npy or .npz file"),
])
def test_bad_array_files(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(DataError, match=message):
        load_dataset(str(tmp_path / "f.npz"), "--x1")


def test_missing_and_empty(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(str(tmp_path / "nope.npy"))
    with pytest.raises(DataError, match="is a directory"):
        load_dataset(str(tmp_path))
    with pytest.raises(DataError, match="selects no samples"):
        load_dataset("digits:train[5:5]")
    with pytest.raises(DataError, match="empty dataset spec"):
        load_dataset("")


# -- digits --------------------------------------------------------------------------------------

def test_digits_splits_and_preprocessing():
    from sklearn.datasets import load_digits
    raw = load_digits()
    train, test, every = (load_dataset(s) for s in ("digits:train", "digits:test", "digits"))
    assert train.x.shape == (1000, 8, 8, 1) and test.x.shape == (797, 8, 8, 1)
    assert every.x.shape == (1797, 8, 8, 1)
    assert np.array_equal(train.y, raw.target[:1000]) and np.array_equal(test.y, raw.target[1000:])
    # scaled to [0, 1], standardised with the training split's statistics
    scaled = raw.images[..., None] / 16.0
    mean, std = scaled[:1000].mean(), scaled[:1000].std()
    np.testing.assert_allclose(test.x, (scaled[1000:] - mean) / std, rtol=0, atol=1e-12)
    assert abs(train.x.mean()) < 1e-12 and abs(train.x.std() - 1) < 1e-12
    assert np.array_equal(every.x[:1000], train.x)
    text = test.describe()
    assert "797 images 8x8x1" in text and "10 classes" in text and "standardised" in text
    head = load_dataset("digits:test[:7]")
    assert np.array_equal(head.x, test.x[:7]) and "samples [:7] of 797" in head.describe()
    with pytest.raises(DataError, match="expected digits, digits:train or digits:test"):
        load_dataset("digits:validation")


# -- CIFAR-10 (synthetic, in the exact cifar-10-batches-py format) ------------------------------

def write_cifar(directory, n_train=4, n_test=3, seed=0):
    """Pickled dicts with bytes keys, as the original Python 2 files: data uint8 [N, 3072]
    rows in CHW order, labels a list of ints."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name, n in [(f"data_batch_{i}", n_train) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img{i}.png".encode() for i in range(n)]}
        with open(directory / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
        batches[name] = (data, labels)
    with open(directory / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [b"airplane"] * 10, b"num_vis": 3072}, fh, protocol=2)
    return batches


def test_cifar10_format(tmp_path):
    root = tmp_path / "cifar"
    batches = write_cifar(root / "cifar-10-batches-py")      # the nested layout is found too
    train = load_dataset(f"cifar10:{root}:train")
    test = load_dataset(f"cifar10:{root}:test")
    assert train.x.shape == (20, 32, 32, 3) and test.x.shape == (3, 32, 32, 3)
    raw_train = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert list(train.y) == labels and list(test.y) == batches["test_batch"][1]
    # CHW rows -> NHWC, /255, per-channel standardisation with the training statistics
    chw = raw_train.reshape(-1, 3, 32, 32).astype(float) / 255
    mean = chw.mean(axis=(0, 2, 3))
    std = chw.std(axis=(0, 2, 3))
    img, h, w, c = 7, 5, 11, 2
    assert train.x[img, h, w, c] == pytest.approx((chw[img, c, h, w] - mean[c]) / std[c], abs=1e-12)
    t = batches["test_batch"][0].reshape(-1, 3, 32, 32).astype(float) / 255
    np.testing.assert_allclose(test.x, (t.transpose(0, 2, 3, 1) - mean) / std, atol=1e-12)
    np.testing.assert_allclose(train.x.mean(axis=(0, 1, 2)), 0, atol=1e-12)
    assert "standardised per channel with the training set's mean" in test.describe()
    # the direct layout, and use by the kernel API
    flat = tmp_path / "flat"
    write_cifar(flat, n_train=1, n_test=2)
    k = infinet.compile("input 32x32x3\nconv 3x3\nrelu\nflatten\ndense\n")
    out = k(f"cifar10:{flat}:test")
    assert out.nngp.shape == (2, 2)


def _corrupt(tmp_path, name, payload):
    root = tmp_path / "c"
    write_cifar(root)
    (root / name).write_bytes(payload)
    return root


@pytest.mark.parametrize("name, payload, message", [
    ("data_batch_3", b"not a pickle at all", "data_batch_3 is not a CIFAR-10 python batch"),
    ("test_batch", pickle.dumps([1, 2, 3], protocol=2), "expected a dict"),
    ("test_batch", pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}, protocol=2),
     "has no 'data' and 'labels'"),
    ("test_batch", pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]},
                                protocol=2), r"must be uint8 \[N, 3072\]"),
    ("test_batch", pickle.dumps({b"data": np.zeros((2, 3072)), b"labels": [1, 2]}, protocol=2),
     "must be uint8"),
    ("test_batch", pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]},
                                protocol=2), "1 labels for 2 images"),
    ("test_batch", pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [12]},
                                protocol=2), "labels must be 0..9"),
])
def test_cifar10_corrupt_files(tmp_path, name, payload, message):
    root = _corrupt(tmp_path, name, payload)
    with pytest.raises(DataError, match=message):
        load_dataset(f"cifar10:{root}:test", "--test")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_cifar10_refuses_code_in_pickles(tmp_path):
    root = _corrupt(tmp_path, "test_batch", pickle.dumps({b"data": _Evil()}, protocol=2))
    with pytest.raises(DataError, match="refusing to load"):
        load_dataset(f"cifar10:{root}:test")
    assert not (tmp_path / "pwned.txt").exists()


def test_cifar10_bad_specs(tmp_path):
    with pytest.raises(DataError, match="expected cifar10:DIR:train"):
        load_dataset(f"cifar10:{tmp_path}")
    with pytest.raises(DataError, match="is not a directory"):
        load_dataset(f"cifar10:{tmp_path / 'missing'}:train")
    write_cifar(tmp_path / "d")
    os.unlink(tmp_path / "d" / "data_batch_5")
    with pytest.raises(DataError, match="missing data_batch_5"):
        load_dataset(f"cifar10:{tmp_path / 'd'}:test")


def test_checksum_sees_values_shape_and_dtype():
    a = np.arange(6.0)
    assert checksum(a) == checksum(a.copy())
    assert checksum(a) != checksum(a.reshape(2, 3))
    assert checksum(a) != checksum(a.astype(np.float32))
    b = a.copy()
    b[3] = np.nextafter(b[3], 10)
    assert checksum(a) != checksum(b)


# -- on the command line -------------------------------------------------------------------------

def test_cli_eval_takes_dataset_specs(tmp_path):
    net = EXAMPLES / "digits_cntk_v.net"
    code, out, err = run_cli("eval", net, "--x1", "digits:test[:6]", "--x2", "digits:train[:4]",
                             "--out", "K.npz", cwd=tmp_path)
    assert code == 0, err
    with np.load(tmp_path / "K.npz") as f:
        want = infinet.compile(net)(load_dataset("digits:test[:6]").x,
                                    load_dataset("digits:train[:4]").x)
        np.testing.assert_allclose(f["ntk"], want.ntk, rtol=1e-13)
    write_cifar(tmp_path / "c")
    for spec, message in [("cifar10:nowhere:train", "nowhere is not a directory"),
                          (f"cifar10:{tmp_path / 'c'}:test", "has shape (3, 32, 32, 3)"),
                          ("digits:test[9:2]", "selects no samples")]:
        code, out, err = run_cli("eval", net, "--x1", spec, "--out", "L.npz", cwd=tmp_path)
        assert code == 2 and err.startswith("error: ") and "Traceback" not in err, err
        assert message in err
        assert not (tmp_path / "L.npz").exists() and not (tmp_path / "L.npz.partial").exists()


# -- a crafted CIFAR pickle: numpy objects over attacker bytes -----------------------------------

def _op_str(text):
    b = text.encode()
    return pickle.BINUNICODE + len(b).to_bytes(4, "little") + b


def _op_bytes(data):
    return pickle.BINBYTES + len(data).to_bytes(4, "little") + data


def _op_int(n):
    return pickle.BININT + n.to_bytes(4, "little", signed=True)


def _op_dtype(code, state):
    """numpy.dtype(code, False, True) then __setstate__(state)."""
    return (pickle.GLOBAL + b"numpy\ndtype\n" + _op_str(code) + pickle.NEWFALSE + pickle.NEWTRUE
            + pickle.TUPLE3 + pickle.REDUCE + state + pickle.BUILD)


def _op_plain_state(order="|"):
    return (pickle.MARK + _op_int(3) + _op_str(order) + pickle.NONE * 3 + _op_int(-1)
            + _op_int(-1) + _op_int(0) + pickle.TUPLE)


def _op_array(shape, dtype_ops, raw):
    """numpy.core.multiarray._reconstruct(ndarray, (0,), b'b') + __setstate__((1, shape,
    dtype, False, raw)): how a protocol-2 pickle holds an array."""
    out = (pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n" + pickle.GLOBAL
           + b"numpy\nndarray\n" + _op_int(0) + pickle.TUPLE1 + _op_bytes(b"b") + pickle.TUPLE3
           + pickle.REDUCE)
    out += pickle.MARK + _op_int(1) + pickle.MARK + b"".join(_op_int(n) for n in shape)
    out += pickle.TUPLE + dtype_ops + pickle.NEWFALSE + _op_bytes(raw) + pickle.TUPLE
    return out + pickle.BUILD


def _batch_pickle(labels_ops):
    data = _op_array((2, 3072), _op_dtype("u1", _op_plain_state()), bytes(2 * 3072))
    return (pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + _op_bytes(b"data") + data
            + pickle.SETITEM + _op_bytes(b"labels") + labels_ops + pickle.SETITEM + pickle.STOP)


def _object_field_dtype():
    """A structured dtype whose one field is an object pointer, flags saying 'no objects':
    numpy reads the field's 8 bytes as a PyObject* (a forged pointer)."""
    obj = _op_dtype("O8", _op_plain_state())
    fields = pickle.EMPTY_DICT + _op_str("a") + obj + _op_int(0) + pickle.TUPLE2 + pickle.SETITEM
    state = (pickle.MARK + _op_int(3) + _op_str("|") + pickle.NONE + _op_str("a") + pickle.TUPLE1
             + fields + _op_int(8) + _op_int(1) + _op_int(0) + pickle.TUPLE)
    return _op_dtype("V8", state)


def _load_cifar_test(root):
    try:
        load_dataset(f"cifar10:{root}:test", "--test")
    except DataError as err:
        return str(err)
    return "loaded"


@pytest.mark.parametrize("labels, message", [
    # an object field over forged pointers: reading the labels segfaulted (exit 139)
    (_op_array((2,), _object_field_dtype(), (0x41414141).to_bytes(8, "little") * 2),
     "refusing an array of dtype 'V8'"),
    (_op_array((2,), _op_dtype("O8", _op_plain_state()), bytes(16)),
     "refusing an array of dtype 'O8'"),
    (_op_array((4,), _op_dtype("i8", _op_plain_state("<")), bytes(8)),   # bytes too short
     "an array of 4 x 8 bytes holding 8"),
    (pickle.GLOBAL + b"numpy.core.multiarray\nscalar\n" + _op_dtype("O8", _op_plain_state())
     + _op_bytes(bytes(8)) + pickle.TUPLE2 + pickle.REDUCE, "refusing an array of dtype 'O8'"),
    # a plain code whose state adds fields (a structured dtype in disguise)
    (_op_array((2,), _op_dtype("u8", pickle.MARK + _op_int(3) + _op_str("|") + pickle.NONE
                                + _op_str("a") + pickle.TUPLE1 + pickle.EMPTY_DICT
                                + _op_int(8) + _op_int(1) + _op_int(0) + pickle.TUPLE), bytes(16)),
     "refusing a structured or sub-array dtype"),
], ids=["object-field", "object-dtype", "short-bytes", "object-scalar", "disguised-fields"])
def test_cifar10_refuses_arrays_that_are_not_plain_numbers(tmp_path, labels, message):
    from forked import run_forked
    root = _corrupt(tmp_path, "test_batch", _batch_pickle(labels))
    status, text = run_forked(_load_cifar_test, root)
    assert status == 0, f"the loader crashed (status {status})"
    assert "is not a CIFAR-10 python batch" in text and message in text, text


def test_cifar10_reads_arrays_of_every_pickle_protocol(tmp_path):
    """Integer label arrays (little- and big-endian), Fortran order, numpy scalars and the
    in-band buffers of protocol 5 are read as they were written."""
    for protocol in (2, 3, 4, 5):
        root = tmp_path / f"p{protocol}"
        batches = write_cifar(root)
        data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
        batch = {b"data": np.asfortranarray(data) if protocol == 3 else data,
                 b"labels": np.array([3, 9], dtype=">i4" if protocol == 4 else "<i8"),
                 b"extra": np.float64(2.5)}
        (root / "test_batch").write_bytes(pickle.dumps(batch, protocol=protocol))
        test = load_dataset(f"cifar10:{root}:test")
        assert list(test.y) == [3, 9]
        train = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
        chw = train.reshape(-1, 3, 32, 32).astype(float) / 255
        mean, std = chw.mean(axis=(0, 2, 3)), chw.std(axis=(0, 2, 3))
        want = (data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) / 255 - mean) / std
        np.testing.assert_allclose(test.x, want, atol=1e-12)
