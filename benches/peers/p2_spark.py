"""P2 peer: Spark Structured Streaming's per-trigger cost for a trivial rate -> noop query.

Usage: p2_spark.py SECONDS   (prints trigger_execution_ms=[...] as JSON)

Runs `rate` (1 row/s) -> `noop` sink with a processing-time trigger of 0 (micro-batches back to
back) in local[2], and collects `durationMs.triggerExecution` of every progress record after the
first 5 (warm-up).
"""
import json
import sys
import tempfile
import time

from pyspark.sql import SparkSession

seconds = float(sys.argv[1])
spark = (
    SparkSession.builder.master("local[2]")
    .appName("sluice-p2")
    .config("spark.sql.shuffle.partitions", "2")
    .config("spark.ui.enabled", "false")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
checkpoint = tempfile.mkdtemp(prefix="sluice-p2-spark-")
query = (
    spark.readStream.format("rate").option("rowsPerSecond", 1).load()
    .writeStream.format("noop")
    .option("checkpointLocation", checkpoint)
    .trigger(processingTime="0 seconds")
    .start()
)
time.sleep(seconds)
progress = query.recentProgress
query.stop()
times = [p["durationMs"]["triggerExecution"] for p in progress if "triggerExecution" in p["durationMs"]]
print(f"spark micro-batches: {len(times)}", file=sys.stderr)
print("trigger_execution_ms=" + json.dumps(times[5:]))
spark.stop()
