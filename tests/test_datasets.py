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
