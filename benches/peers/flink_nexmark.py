"""Flink peer for the Nexmark comparison (issue 22): one query over the JSON-lines files that
`cargo run --example nexmark_files` writes, on a local Flink mini-cluster (PyFlink's Table
API, the same SQL as Sluice's job), in streaming mode: the filesystem source reads the files
once (a bounded stream: at its end the watermark reaches the end of time and every window
closes), event time with a watermark, RocksDB state with incremental checkpoints, the given
parallelism, output to CSV files committed by checkpoints.

    python flink_nexmark.py --data DIR --out DIR --query q5 [--parallelism 2]
        [--checkpoint-ms 1000] [--watermark-ms 1000] [--work DIR] [--run-seconds S]

With `--run-seconds S` (the fixed-rate latency bench, benches/p13_latency.rs) the source
watches its directory for new files every 100 ms (an unbounded stream) and the job is
cancelled after S seconds; CSV part files roll every 100 ms and are committed (made visible)
by the next checkpoint, as Flink's exactly-once file sink does. Tables read there: `bid` only.

Prints `run_seconds=S` (from submitting the job to its end), `rows=N` (rows written) and
`cpu_seconds=C`: the user + system CPU time of this process and its descendants (the JVM the
gateway starts is not waited for, so it is read from /proc before this process ends), and
`peak_rss_mib=M`, the largest peak RSS among them (the JVM's).
"""

import argparse
import glob
import os
import time

from pyflink.common import Configuration
from pyflink.table import EnvironmentSettings, TableEnvironment

TABLES = {
    "person": "id BIGINT, name STRING, email_address STRING, credit_card STRING, city STRING, "
    "state STRING, date_time TIMESTAMP(3), extra STRING",
    "auction": "id BIGINT, item_name STRING, description STRING, initial_bid BIGINT, "
    "reserve BIGINT, date_time TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, "
    "category BIGINT, extra STRING",
    "bid": "auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, "
    "date_time TIMESTAMP(3), extra STRING",
}

# The queries, as Sluice's benches/p4_nexmark.rs and benches/p12_flink.rs spell them (Flink
# needs `TABLE t` inside a window function; Sluice accepts both). Output columns: see OUTPUTS.
QUERIES = {
    "q0": "SELECT auction, bidder, price, date_time, extra FROM bid",
    "q1": "SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid",
    "q2": "SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0",
    # q5 and q8 also output their window's start (as benches/p12_flink.rs runs them), so the
    # outputs are compared window by window.
    "q5": """SELECT AuctionBids.auction, AuctionBids.num, AuctionBids.starttime FROM (
           SELECT auction, count(*) AS num, window_start AS starttime, window_end AS endtime
           FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
           GROUP BY auction, window_start, window_end) AS AuctionBids
         JOIN (
           SELECT max(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime FROM (
             SELECT count(*) AS num, window_start AS starttime, window_end AS endtime
             FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
             GROUP BY auction, window_start, window_end) AS CountBids
           GROUP BY CountBids.starttime, CountBids.endtime) AS MaxBids
         ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.endtime = MaxBids.endtime
            AND AuctionBids.num >= MaxBids.maxn""",
    "q8": """SELECT P.id, P.name, P.starttime FROM (
           SELECT id, name, window_start AS starttime, window_end AS endtime
           FROM TABLE(TUMBLE(TABLE person, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
           GROUP BY id, name, window_start, window_end) P
         JOIN (
           SELECT seller, window_start AS starttime, window_end AS endtime
           FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
           GROUP BY seller, window_start, window_end) A
         ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime""",
    # q7: the bids at their 10 s window's highest price, an interval join of the bids with the
    # windowed maximum. Nexmark's Flink text joins on TUMBLE_ROWTIME (the window's end less
    # 1 ms) with an inclusive BETWEEN, which also takes a bid 1 ms before the window; bounded
    # as here it is exactly the window's bids, [window_start, window_end), as Sluice's q7.
    "q7": """SELECT B.auction, B.price, B.bidder, B.date_time, B.extra
         FROM bid B
         JOIN (SELECT max(price) AS maxprice, window_time AS date_time
               FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
               GROUP BY window_start, window_end, window_time) B1
         ON B.price = B1.maxprice
         WHERE B.date_time > B1.date_time - INTERVAL '10' SECOND AND B.date_time <= B1.date_time""",
    # q7's shape as a window join of the bids with their window's maximum
    # (benches/p12_flink.rs: WINDOW_JOIN_Q7).
    "q7w": """SELECT B.auction, B.price, B.bidder, B.date_time
         FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) B
         JOIN (SELECT max(price) AS maxprice, window_start, window_end
               FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
               GROUP BY window_start, window_end) M
         ON B.window_start = M.window_start AND B.window_end = M.window_end
            AND B.price = M.maxprice""",
    # q8's shape as a window join (benches/p12_flink.rs: WINDOW_JOIN_Q8).
    "q8w": """SELECT P.id, P.name, P.window_start AS starttime
         FROM TABLE(TUMBLE(TABLE person, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) P
         JOIN TABLE(TUMBLE(TABLE auction, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) A
         ON P.id = A.seller AND P.window_start = A.window_start AND P.window_end = A.window_end""",
}

# The fixed-rate latency bench's queries (benches/p13_latency.rs): a pass-through, and a
# 1-second tumbling count per auction with the window's bounds.
QUERIES["lat_pass"] = "SELECT auction, bidder, price, date_time, extra FROM bid"
QUERIES["lat_window"] = """SELECT auction, count(*) AS num, window_start, window_end
         FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '1' SECOND))
         GROUP BY auction, window_start, window_end"""

OUTPUTS = {
    "q0": "auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3), extra STRING",
    "q1": "auction BIGINT, bidder BIGINT, price DECIMAL(23, 3), date_time TIMESTAMP(3), extra STRING",
    "q2": "auction BIGINT, price BIGINT",
    "q5": "auction BIGINT, num BIGINT, starttime TIMESTAMP(3)",
    "q8": "id BIGINT, name STRING, starttime TIMESTAMP(3)",
    "q7": "auction BIGINT, price BIGINT, bidder BIGINT, date_time TIMESTAMP(3), extra STRING",
    "q7w": "auction BIGINT, price BIGINT, bidder BIGINT, date_time TIMESTAMP(3)",
    "q8w": "id BIGINT, name STRING, starttime TIMESTAMP(3)",
    "lat_pass": "auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3), extra STRING",
    "lat_window": "auction BIGINT, num BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3)",
}
LATENCY_BID = "auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3), extra STRING"


def tree_cpu_seconds():
    """CPU seconds (user + system) used so far by this process and every live descendant."""
    ticks = os.sysconf("SC_CLK_TCK")

    def children(pid):
        found = []
        for task in glob.glob(f"/proc/{pid}/task/*/children"):
            try:
                with open(task) as fh:
                    found += [int(c) for c in fh.read().split()]
            except OSError:
                pass
        return found

    def cpu(pid):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        except OSError:
            return 0.0

    total, stack = 0.0, [os.getpid()]
    while stack:
        pid = stack.pop()
        total += cpu(pid)
        stack += children(pid)
    return total


def tree_peak_rss_mib():
    """The largest peak RSS (VmHWM) of this process and its live descendants, in MiB."""
    peak, stack = 0, [os.getpid()]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) // 1024)
        except OSError:
            pass
        for task in glob.glob(f"/proc/{pid}/task/*/children"):
            try:
                with open(task) as fh:
                    stack += [int(c) for c in fh.read().split()]
            except OSError:
                pass
    return peak


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--query", required=True, choices=sorted(QUERIES))
    p.add_argument("--parallelism", type=int, default=2)
    p.add_argument("--checkpoint-ms", type=int, default=1000)
    p.add_argument("--watermark-ms", type=int, default=1000)
    p.add_argument("--work", default=None)
    p.add_argument("--run-seconds", type=float, default=None)
    a = p.parse_args()
    unbounded = a.run_seconds is not None
    work = os.path.abspath(a.work or a.out + ".work")
    os.makedirs(work, exist_ok=True)

    config = Configuration()
    config.set_string("parallelism.default", str(a.parallelism))
    config.set_string("state.backend.type", "rocksdb")
    config.set_string("execution.checkpointing.incremental", "true")
    config.set_string("execution.checkpointing.interval", f"{a.checkpoint_ms} ms")
    config.set_string("execution.checkpointing.dir", "file://" + os.path.join(work, "checkpoints"))
    config.set_string("io.tmp.dirs", os.path.join(work, "tmp"))
    env = TableEnvironment.create(
        EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(config).build()
    )
    data = os.path.abspath(a.data)
    tables = {"bid": LATENCY_BID} if unbounded else TABLES
    monitor = ", 'source.monitor-interval' = '100 ms'" if unbounded else ""
    for name, columns in tables.items():
        env.execute_sql(
            f"""CREATE TABLE {name} ({columns},
                  WATERMARK FOR date_time AS date_time - INTERVAL '{a.watermark_ms / 1000}' SECOND)
                WITH ('connector' = 'filesystem', 'path' = 'file://{data}/{name}',
                      'format' = 'json', 'json.timestamp-format.standard' = 'ISO-8601'{monitor})"""
        )
    out = os.path.abspath(a.out)
    # Row formats roll by time or size; pending files are committed at the next checkpoint.
    rolling = (
        ", 'sink.rolling-policy.rollover-interval' = '100 ms', "
        "'sink.rolling-policy.check-interval' = '100 ms'"
        if unbounded
        else ""
    )
    env.execute_sql(
        f"""CREATE TABLE out_table ({OUTPUTS[a.query]})
            WITH ('connector' = 'filesystem', 'path' = 'file://{out}', 'format' = 'csv'{rolling})"""
    )
    started = time.monotonic()
    result = env.execute_sql(f"INSERT INTO out_table {QUERIES[a.query]}")
    if unbounded:
        print("started", flush=True)
        time.sleep(a.run_seconds)
        result.get_job_client().cancel().result()
    else:
        result.wait()
    took = time.monotonic() - started
    rows = 0
    for f in glob.glob(os.path.join(out, "**", "*"), recursive=True):
        base = os.path.basename(f)
        if os.path.isfile(f) and not base.startswith("."):
            with open(f) as fh:
                rows += sum(1 for _ in fh)
    print(f"run_seconds={took:.3f}")
    print(f"rows={rows}")
    print(f"cpu_seconds={tree_cpu_seconds():.3f}")
    print(f"peak_rss_mib={tree_peak_rss_mib()}")


if __name__ == "__main__":
    main()
