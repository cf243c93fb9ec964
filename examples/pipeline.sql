-- Kafka → Parquet: JSON events from topic `events` into a lake partitioned by event date,
-- exactly once. Start a broker first (scripts/broker.sh start; scripts/broker.sh topic events 4)
-- and produce with `cargo run --example produce_events`. Run:
--   sluice run examples/pipeline.sql --checkpoint demo/ckpt --trigger 1s --progress json
CREATE TABLE events (user_id BIGINT, kind VARCHAR, amount DOUBLE, ts TIMESTAMP)
  WITH (connector = 'kafka', bootstrap_servers = '127.0.0.1:9092', topic = 'events',
        format = 'json', start = 'earliest', max_records_per_trigger = '500000',
        on_bad_record = 'dead_letter', dead_letter_path = 'demo/dead/events/');
CREATE TABLE lake WITH (connector = 'parquet', path = 'demo/lake/events/', partition_by = 'dt');
INSERT INTO lake SELECT *, CAST(ts AS DATE) AS dt FROM events WHERE amount > 0;
