"""P10 peer: the 50 M-key group-by in PySpark local[2] with the same memory as Sluice's
executors (in local mode the driver's heap is the executors').

Usage: p10_spark.py DATA_DIR OUT_DIR RUNS MEMORY_MB [SHUFFLE_PARTITIONS]
(shuffle partitions: Spark's default 200 unless given; at 2, one per core, the final
aggregation does not fit a 512 MiB heap and fails with OutOfMemoryError)
Prints run_seconds=S per run (in a warm session) and peak_rss_mib=M (the JVM's peak RSS).
"""
import sys
import time

from pyspark.sql import SparkSession

data, out, runs, memory_mb = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
partitions = sys.argv[5] if len(sys.argv) > 5 else "200"
spark = (
    SparkSession.builder.master("local[2]")
    .appName("sluice-p10")
    .config("spark.sql.shuffle.partitions", partitions)
    .config("spark.ui.enabled", "false")
    .config("spark.driver.memory", f"{memory_mb}m")
    .config("spark.local.dir", f"{out}/tmp")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
spark.read.parquet(data).createOrReplaceTempView("bids")
query = "SELECT auction, count(*) AS n, sum(price) AS s, max(channel) AS c FROM bids GROUP BY auction"
for i in range(runs):
    start = time.perf_counter()
    spark.sql(query).write.mode("overwrite").parquet(f"{out}/run-{i}")
    took = time.perf_counter() - start
    print(f"spark run {i}: {took:.1f}s", file=sys.stderr)
    print(f"run_seconds={took}")
# The JVM's peak RSS (VmHWM), read while the session is alive.
pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
with open(f"/proc/{pid}/status") as f:
    hwm = next(l for l in f if l.startswith("VmHWM:"))
print(f"peak_rss_mib={int(hwm.split()[1]) // 1024}")
spark.stop()
