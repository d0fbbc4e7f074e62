"""Writes small datasets as Parquet and Arrow files the way users' tools do
(pyarrow, in the layouts Spark, pandas and Polars produce), for
tests/own_data.rs. Usage: python columnar.py LAYOUT DIR

Layouts: columns (one numeric column per feature, several row groups,
snappy), list (a fixed-size list column in Spark-style part files with
_SUCCESS and .crc files, zstd), vector (a Spark ML VectorUDT column, dense and
sparse rows, the label in Hive key=value directories), arrow (Arrow IPC files
of uint8 pixel lists), and the defects corrupt, mistyped and null."""

import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

WIDTH, CLASSES = 12, 3


def clusters(n, seed):
    centers = np.random.default_rng(7).normal(0, 1.5, (CLASSES, WIDTH))
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % CLASSES
    x = centers[labels] + rng.normal(0, 1, (n, WIDTH))
    return x.astype(np.float32), labels


def sets():
    return [("train", *clusters(1800, 1)), ("test", *clusters(600, 2))]


def columns_table(x, y):
    cols = {f"f{j}": pa.array(x[:, j]) for j in range(WIDTH)}
    cols["class"] = pa.array(y.astype(np.int64))
    return pa.table(cols)


def columns(out):
    for name, x, y in sets():
        pq.write_table(columns_table(x, y), f"{out}/{name}.parquet", row_group_size=300, compression="snappy")


def spark_dir(path):
    os.makedirs(path, exist_ok=True)
    open(f"{path}/_SUCCESS", "w").close()


def listed(out):
    for name, x, y in sets():
        d = f"{out}/{name}"
        spark_dir(d)
        for part, rows in enumerate(np.array_split(np.arange(len(y)), 2)):
            feats = pa.FixedSizeListArray.from_arrays(pa.array(x[rows].ravel()), WIDTH)
            table = pa.table({"label": pa.array(y[rows].astype(np.int32)), "features": feats})
            file = f"part-{part:05d}-c0ffee.zstd.parquet"
            pq.write_table(table, f"{d}/{file}", compression="zstd")
            open(f"{d}/.{file}.crc", "wb").write(b"crc")


VECTOR = pa.struct(
    [
        ("type", pa.int8()),
        ("size", pa.int32()),
        ("indices", pa.list_(pa.int32())),
        ("values", pa.list_(pa.float64())),
    ]
)


def vectors(x):
    rows = []
    for i, row in enumerate(x):
        if i % 2 == 0:
            rows.append({"type": 1, "size": None, "indices": None, "values": row.tolist()})
        else:
            at = np.flatnonzero(row)
            rows.append({"type": 0, "size": WIDTH, "indices": at.tolist(), "values": row[at].tolist()})
    return pa.array(rows, type=VECTOR)


def vector(out):
    for name, x, y in sets():
        x = np.where(np.abs(x) < 0.3, 0, x)
        for c in range(CLASSES):
            d = f"{out}/{name}/label={c}"
            os.makedirs(d, exist_ok=True)
            pq.write_table(pa.table({"features": vectors(x[y == c])}), f"{d}/part-0.snappy.parquet")


def arrow(out):
    rng = np.random.default_rng(3)
    for name, n in [("train", 800), ("test", 200)]:
        y = np.arange(n) % 4
        img = np.full((n, 8, 8), 20.0)
        for i, c in enumerate(y):
            img[i, (c // 2) * 4 : (c // 2) * 4 + 4, (c % 2) * 4 : (c % 2) * 4 + 4] = 150
        img = (img + 60 * rng.random((n, 8, 8))).astype(np.uint8).reshape(n, 64)
        pixels = pa.FixedSizeListArray.from_arrays(pa.array(img.ravel()), 64)
        table = pa.table({"pixels": pixels, "digit": pa.array(y.astype(np.uint8))})
        with ipc.new_file(f"{out}/{name}.arrow", table.schema) as w:
            w.write_table(table, max_chunksize=256)


def corrupt(out):
    columns(out)
    path = f"{out}/train.parquet"
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def mistyped(out):
    for name, x, y in sets():
        table = columns_table(x, y).append_column("note", pa.array(["n"] * len(y)))
        pq.write_table(table, f"{out}/{name}.parquet")


def null(out):
    for name, x, y in sets():
        table = columns_table(x, y)
        f3 = pa.array([None if i == 5 else float(v) for i, v in enumerate(x[:, 3])], pa.float32())
        table = table.set_column(3, "f3", f3)
        pq.write_table(table, f"{out}/{name}.parquet")


if __name__ == "__main__":
    layout, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    {
        "columns": columns,
        "list": listed,
        "vector": vector,
        "arrow": arrow,
        "corrupt": corrupt,
        "mistyped": mistyped,
        "null": null,
    }[layout](out)
