-- The demo job (scripts/demo.sh): per-auction totals of generated bids, written as Parquet
-- partitioned by sales channel. Run it yourself with:
--   sluice run examples/bids.sql --checkpoint demo/checkpoint
CREATE TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, date_time TIMESTAMP)
  WITH (connector = 'parquet', path = 'demo/data/bids/');

CREATE TABLE totals
  WITH (connector = 'parquet', path = 'demo/out/totals/', partition_by = 'channel');

INSERT INTO totals
SELECT channel, auction, count(*) AS n, max(price) AS top, sum(price) AS total
FROM bids
WHERE price > 0
GROUP BY channel, auction;
