"""P1 peer: the same group-by in PySpark local[2], timed in a warm session.

Usage: p1_spark.py DATA_DIR OUT_DIR RUNS   (prints per-run times and median_seconds=...)
"""
import statistics
import sys
import time

from pyspark.sql import SparkSession

data, out, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
spark = (
    SparkSession.builder.master("local[2]")
    .appName("sluice-p1")
    .config("spark.sql.shuffle.partitions", "2")
    .config("spark.ui.enabled", "false")
    .config("spark.driver.memory", "2g")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
spark.read.parquet(data).createOrReplaceTempView("bids")
query = "SELECT auction, count(*) AS n, max(price) AS top, sum(price) AS total FROM bids GROUP BY auction"
times = []
for i in range(runs):
    start = time.perf_counter()
    spark.sql(query).write.mode("overwrite").parquet(f"{out}/run-{i}")
    times.append(time.perf_counter() - start)
    print(f"spark run {i}: {times[-1]:.3f}s", file=sys.stderr)
print(f"median_seconds={statistics.median(times)}")
spark.stop()
