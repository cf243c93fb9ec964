//! The Nexmark queries the benchmarks run (P4 over the generator, P12 over files against
//! Flink), as Sluice's SQL: q0–q2 pass-through, currency conversion and selection; q5 hot items
//! (HOP 10 s / 2 s, join with the maximum); q7 highest bid (TUMBLE 10 s); q8 new users (person
//! ⋈ auction per TUMBLE 10 s). Tables: `bid`, `auction`, `person`.

/// (name, SQL) of each query.
pub const QUERIES: &[(&str, &str)] = &[
    (
        "q0",
        "SELECT auction, bidder, price, date_time, extra FROM bid",
    ),
    (
        "q1",
        "SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid",
    ),
    (
        "q2",
        "SELECT auction, price FROM bid WHERE auction % 123 = 0",
    ),
    (
        "q5",
        "SELECT AuctionBids.auction, AuctionBids.num FROM (
           SELECT auction, count(*) AS num, window_start AS starttime, window_end AS endtime
           FROM TABLE(HOP(bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
           GROUP BY auction, window_start, window_end) AS AuctionBids
         JOIN (
           SELECT max(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime FROM (
             SELECT count(*) AS num, window_start AS starttime, window_end AS endtime
             FROM TABLE(HOP(bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
             GROUP BY auction, window_start, window_end) AS CountBids
           GROUP BY CountBids.starttime, CountBids.endtime) AS MaxBids
         ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.endtime = MaxBids.endtime
            AND AuctionBids.num >= MaxBids.maxn",
    ),
    (
        "q7",
        "SELECT B.auction, B.price, B.bidder, B.date_time, B.extra FROM bid B
         JOIN (SELECT max(price) AS maxprice, window_end AS date_time
               FROM TABLE(TUMBLE(bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
               GROUP BY window_start, window_end) B1
         ON B.price = B1.maxprice
         WHERE B.date_time >= B1.date_time - INTERVAL '10' SECOND AND B.date_time < B1.date_time",
    ),
    (
        "q8",
        "SELECT P.id, P.name, P.starttime FROM (
           SELECT id, name, window_start AS starttime, window_end AS endtime
           FROM TABLE(TUMBLE(person, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
           GROUP BY id, name, window_start, window_end) P
         JOIN (
           SELECT seller, window_start AS starttime, window_end AS endtime
           FROM TABLE(TUMBLE(auction, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
           GROUP BY seller, window_start, window_end) A
         ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime",
    ),
];
