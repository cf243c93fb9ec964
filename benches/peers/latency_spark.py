"""Fixed-rate latency peer (benches/p13_latency.rs): Spark Structured Streaming reading the
bids the bench writes as JSON-lines files, at the given trigger, writing Parquet.

Usage: latency_spark.py INPUT_DIR OUTPUT_DIR CHECKPOINT_DIR QUERY TRIGGER_MS RUN_SECONDS
[WATERMARK_MS]

QUERY is `lat_pass` (the bids as they are) or `lat_window` (a 1-second tumbling count per
auction, the watermark WATERMARK_MS behind the largest event time, append mode: each window
once it closes). The file source lists INPUT_DIR/bid every micro-batch (trigger
processingTime TRIGGER_MS; 0 starts the next batch as soon as the last ends); the Parquet sink
commits each batch's files through its `_spark_metadata` log. Prints `started` once the query
runs, then stops it after RUN_SECONDS. RocksDB state store, local[2], 2 shuffle partitions.
"""
import sys
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType, TimestampType

input_dir, output_dir, checkpoint, query, trigger_ms, run_seconds = sys.argv[1:7]
watermark_ms = int(sys.argv[7]) if len(sys.argv) > 7 else 1000
spark = (
    SparkSession.builder.master("local[2]")
    .appName("sluice-p13")
    .config("spark.sql.shuffle.partitions", "2")
    .config("spark.ui.enabled", "false")
    .config("spark.ui.showConsoleProgress", "false")
    .config("spark.sql.session.timeZone", "UTC")
    .config(
        "spark.sql.streaming.stateStore.providerClass",
        "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
    )
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
schema = StructType(
    [
        StructField("auction", LongType()),
        StructField("bidder", LongType()),
        StructField("price", LongType()),
        StructField("date_time", TimestampType()),
        StructField("extra", StringType()),
    ]
)
bids = spark.readStream.schema(schema).json(input_dir + "/bid")
if query == "lat_pass":
    out = bids
elif query == "lat_window":
    out = (
        bids.withWatermark("date_time", f"{watermark_ms} milliseconds")
        .groupBy(F.window("date_time", "1 second"), "auction")
        .agg(F.count(F.lit(1)).alias("num"))
        .select(
            "auction",
            "num",
            F.col("window.start").alias("window_start"),
            F.col("window.end").alias("window_end"),
        )
    )
else:
    raise SystemExit(f"unknown query {query}")
running = (
    out.writeStream.format("parquet")
    .option("path", output_dir)
    .option("checkpointLocation", checkpoint)
    .outputMode("append")
    .trigger(processingTime=f"{int(trigger_ms)} milliseconds")
    .start()
)
print("started", flush=True)
time.sleep(float(run_seconds))
running.stop()
spark.stop()
