"""Prints a job file with keys of its [train] table set, for the benchmarks.

    python3 bench/job_variant.py JOB NAME:KEY=VALUE;KEY=VALUE SEED [KEY=VALUE ...]

The job is renamed <job>-<NAME>-s<SEED>; each KEY=VALUE (VALUE in TOML) replaces
the key's line, or is added to [train] when the job does not set it.
"""
import re
import sys

path, variant, seed, *more = sys.argv[1:]
text = open(path).read()
name, _, keys = variant.partition(':')
sets = dict(kv.split('=', 1) for kv in keys.split(';') + more if kv)
sets['seed'] = seed
job = re.search(r'^name = "(.*)"$', text, flags=re.M).group(1)
text = re.sub(r'^name = .*$', f'name = "{job}-{name}-s{seed}"', text, count=1, flags=re.M)
for key, value in sets.items():
    line = f'{key} = {value}'
    text, n = re.subn(rf'^{key} = .*$', line, text, count=1, flags=re.M)
    if n == 0:
        text = text.replace('[train]\n', f'[train]\n{line}\n', 1)
print(text, end='')
