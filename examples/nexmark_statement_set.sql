-- A statement set without a broker: the Nexmark bid stream archived as it arrives and counted
-- per auction in 10-second windows, by one query that reads the stream once per epoch and
-- commits both tables together (Flink's EXECUTE STATEMENT SET):
--   sluice run examples/nexmark_statement_set.sql --checkpoint demo/ckpt-set --trigger 1s
--   sluice run -e "SELECT count(*) FROM 'demo/bid_archive/'"
--   sluice run -e "SELECT * FROM 'demo/bid_counts/' ORDER BY bids DESC LIMIT 10"
CREATE TABLE bid (WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)
  WITH (connector = 'nexmark', kind = 'bid', rate = '20000');
CREATE TABLE bid_archive WITH (connector = 'parquet', path = 'demo/bid_archive/');
CREATE TABLE bid_counts WITH (connector = 'parquet', path = 'demo/bid_counts/');
EXECUTE STATEMENT SET
BEGIN
  INSERT INTO bid_archive SELECT auction, bidder, price, channel, date_time FROM bid;
  INSERT INTO bid_counts
  SELECT window_start, window_end, auction, count(*) AS bids, max(price) AS top
  FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
  GROUP BY window_start, window_end, auction;
END;
