-- Nexmark query 5 style "hot items" without a broker: bids per auction in 10-second windows
-- sliding every 2 seconds, over the in-process Nexmark generator (20 000 events per second of
-- wall time), emitted once the watermark passes each window's end:
--   sluice run examples/nexmark_hot_items.sql --checkpoint demo/ckpt-nexmark --trigger 1s
--   sluice run -e "SELECT * FROM 'demo/nexmark_hot_items/' ORDER BY bids DESC LIMIT 10"
CREATE TABLE bid (WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)
  WITH (connector = 'nexmark', kind = 'bid', rate = '20000');
CREATE TABLE hot_items WITH (connector = 'parquet', path = 'demo/nexmark_hot_items/');
INSERT INTO hot_items
SELECT window_start, window_end, auction, count(*) AS bids, max(price) AS top
FROM TABLE(HOP(bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY window_start, window_end, auction;
