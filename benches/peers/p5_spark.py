"""P5/P6 peer: Spark Structured Streaming, RocksDB state store, on the same Parquet files.

Usage: p5_spark.py INPUT_DIR OUTPUT_DIR CHECKPOINT_DIR
Prints one line `result={json}` with the events read, the JVM's CPU seconds and the wall
seconds of the query (JVM start-up excluded), every batch's stateOperators[0].commitTimeMs and
the output table's row count is left to the caller (it reads the Parquet back itself).

The query: a 10-second tumbling-window count per auction with a 5-second watermark, append
mode, Parquet sink, one new file per micro-batch (maxFilesPerTrigger = 1), trigger
availableNow: what `benches/p5_filestream.rs` runs on Sluice.
"""
import json
import os
import sys
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

input_dir, output_dir, checkpoint = sys.argv[1:4]
spark = (
    SparkSession.builder.master("local[2]")
    .appName("sluice-p5")
    .config("spark.sql.shuffle.partitions", "2")
    .config("spark.ui.enabled", "false")
    .config("spark.sql.session.timeZone", "UTC")
    .config("spark.sql.streaming.numRecentProgressUpdates", "10000")
    .config(
        "spark.sql.streaming.stateStore.providerClass",
        "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
    )
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
jvm_pid = spark.sparkContext._gateway.proc.pid
ticks = os.sysconf("SC_CLK_TCK")


def jvm_cpu_seconds():
    with open(f"/proc/{jvm_pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat; fields[0] here is field 3 (state).
    return (int(fields[11]) + int(fields[12])) / ticks


schema = spark.read.parquet(input_dir).schema
bids = (
    spark.readStream.schema(schema)
    .option("maxFilesPerTrigger", 1)
    .parquet(input_dir)
)
counts = (
    # The files hold TIMESTAMP_NTZ (no time zone), which Spark's watermark does not take.
    bids.withColumn("date_time", F.col("date_time").cast("timestamp"))
    .withWatermark("date_time", "5 seconds")
    .groupBy(F.window("date_time", "10 seconds"), "auction")
    .count()
    .select(
        F.col("window.start").alias("window_start"),
        F.col("window.end").alias("window_end"),
        "auction",
        F.col("count").alias("n"),
    )
)
cpu_before = jvm_cpu_seconds()
started = time.time()
query = (
    counts.writeStream.format("parquet")
    .outputMode("append")
    .option("path", output_dir)
    .option("checkpointLocation", checkpoint)
    .trigger(availableNow=True)
    .start()
)
query.awaitTermination()
wall = time.time() - started
cpu = jvm_cpu_seconds() - cpu_before
progress = query.recentProgress
events = sum(p["numInputRows"] for p in progress)
commit_ms = [
    p["stateOperators"][0]["commitTimeMs"]
    for p in progress
    if p.get("stateOperators") and p["numInputRows"] > 0
]
print(
    "result="
    + json.dumps(
        {
            "events": events,
            "cpu_s": cpu,
            "wall_s": wall,
            "batches": len(progress),
            "commit_ms": commit_ms,
        }
    )
)
spark.stop()
