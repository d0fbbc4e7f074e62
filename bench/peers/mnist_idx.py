"""Load MNIST IDX files (raw or .gz). Dir from $MNIST_DIR (side_by_side.sh sets it), else ../data/mnist beside this folder."""
import gzip, os, struct, numpy as np
DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "mnist")

def _read(d, stem):
    for name, opener in ((stem + "-ubyte.gz", gzip.open), (stem + "-ubyte", open),
                         (stem.replace("-idx", ".idx") + "-ubyte", open)):
        path = os.path.join(d, name)
        if os.path.exists(path):
            with opener(path, "rb") as f:
                data = f.read()
            break
    else:
        raise FileNotFoundError(f"{stem} not found in {d}")
    magic, = struct.unpack(">I", data[:4])
    nd = magic & 0xFF
    dims = struct.unpack(">" + "I" * nd, data[4:4 + 4 * nd])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims)

def load(d=None):
    d = d or os.environ.get("MNIST_DIR", DEFAULT)
    xtr = _read(d, "train-images-idx3").reshape(-1, 784).astype(np.float32) / 255.0
    ytr = _read(d, "train-labels-idx1").astype(np.int64)
    xte = _read(d, "t10k-images-idx3").reshape(-1, 784).astype(np.float32) / 255.0
    yte = _read(d, "t10k-labels-idx1").astype(np.int64)
    assert xtr.shape == (60000, 784) and xte.shape == (10000, 784)
    return xtr, ytr, xte, yte
