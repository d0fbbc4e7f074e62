"""A job file's [data] table replaced, the rest of the file kept as written."""

import json
import re

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\-\"]+)\s*\]\]?\s*(#.*)?$")


def _value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"a [data] value of type {type(v).__name__} cannot be written: {v!r}")


def data_table(text):
    """The job's [data] table as a dict (empty when it has none)."""
    return dict(tomllib.loads(text).get("data", {}))


def with_data(text, data):
    """`text` with its [data] table (header to the next table) replaced by
    `data`'s keys, or with one added at the end."""
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if (m := _HEADER.match(l)) and m.group(1) == "data"), None)
    block = ["[data]"] + [f"{k} = {_value(v)}" for k, v in data.items()]
    if start is None:
        out = lines + [""] + block
    else:
        end = next((j for j in range(start + 1, len(lines)) if _HEADER.match(lines[j])), len(lines))
        nested = [l for l in lines[end:] if (m := _HEADER.match(l)) and m.group(1).startswith("data.")]
        if nested:
            raise ValueError(f"the job has a nested data table ({nested[0].strip()}): write its [data] as one table")
        out = lines[:start] + block + [""] + lines[end:]
    result = "\n".join(out) + "\n"
    tomllib.loads(result)  # what is handed on parses
    return result
