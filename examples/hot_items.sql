-- Continuous aggregation: bids per auction in 10-second tumbling windows of event time.
-- Each window is written once, when the watermark (largest event time seen minus 4 s) passes
-- its end. With the broker of the README's streaming example:
--   scripts/broker.sh topic bids 2
--   cargo run --example produce_events -- --topic bids --partitions 2 --count 60000 --kind bids
--   sluice run examples/hot_items.sql --checkpoint demo/ckpt-hot --trigger 1s
CREATE TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP,
                   WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
  WITH (connector = 'kafka', bootstrap_servers = '127.0.0.1:9092', topic = 'bids', format = 'json');
CREATE TABLE hot_items WITH (connector = 'parquet', path = 'demo/hot_items/');
INSERT INTO hot_items
SELECT window_start, window_end, auction, count(*) AS bids, max(price) AS top
FROM TABLE(TUMBLE(bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
GROUP BY window_start, window_end, auction;
