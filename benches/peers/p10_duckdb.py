"""P10 peer: the 50 M-key group-by in DuckDB under a memory limit.

Usage: p10_duckdb.py DATA_DIR OUT_DIR RUNS MEMORY_MB
Prints run_seconds=S per run and peak_rss_mib=M (this process's peak RSS).
"""
import os
import resource
import shutil
import sys
import time

import duckdb

data, out, runs, memory_mb = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
query = "SELECT auction, count(*) AS n, sum(price) AS s, max(channel) AS c FROM read_parquet('{}/*.parquet') GROUP BY auction".format(data)
os.makedirs(out, exist_ok=True)
con = duckdb.connect()
con.execute(f"SET memory_limit = '{memory_mb}MB'")
con.execute("SET threads = 2")
con.execute(f"SET temp_directory = '{out}/tmp'")
con.execute("SET preserve_insertion_order = false")
for i in range(runs):
    target = f"{out}/run-{i}.parquet"
    start = time.perf_counter()
    con.execute(f"COPY ({query}) TO '{target}' (FORMAT parquet)")
    took = time.perf_counter() - start
    print(f"duckdb run {i}: {took:.1f}s", file=sys.stderr)
    print(f"run_seconds={took}")
    os.remove(target)
print(f"peak_rss_mib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}")
shutil.rmtree(out, ignore_errors=True)
