//! Where an epoch's outputs are: the locations a task reads its inputs from, and the printed
//! stage's rows fetched from the executors.

use std::sync::Arc;

use futures::StreamExt;
use sluice_checkpoint::Epoch;
use sluice_connectors::console::ConsolePrinter;

use super::cluster::Cluster;
use super::scheduler::EpochScheduler;
use super::tasks::Tasks;
use crate::error::{describe_datafusion, EngineError, Result};
use crate::plan::PlannedQuery;
use crate::protocol::{FetchRequest, MapOutputLocation};
use crate::shuffle::{Fetcher, ShuffleClient};

impl Tasks<'_> {
    /// Where the finished tasks of `stage` left output partition `reduce`, leaving out those
    /// that reported it empty: a reader never asks for what holds no rows (an epoch without
    /// data makes no fetch at all).
    pub(super) fn locations(
        &self,
        scheduler: &EpochScheduler,
        stage: crate::protocol::StageId,
        reduce: usize,
    ) -> Vec<MapOutputLocation> {
        scheduler
            .reports(stage)
            .into_iter()
            .filter(|(_, _, report)| report.partition_rows.get(reduce) != Some(&0))
            .filter_map(|(p, executor, report)| {
                self.members.get(&executor).map(|m| MapOutputLocation {
                    map_partition: p,
                    executor,
                    addr: m.info.data_addr,
                    epoch: report.cached_from,
                    reduce_partition: None,
                })
            })
            .collect()
    }

    /// Streams the printed stage's rows from the executors into a bounded printer.
    pub(super) async fn fetch_results(
        &mut self,
        cluster: &Cluster,
        planned: &PlannedQuery,
        scheduler: &EpochScheduler,
        epoch: Epoch,
    ) -> Result<ConsolePrinter> {
        let final_stage = planned
            .console_stage()
            .and_then(|id| planned.stages.iter().find(|s| s.id == id))
            .ok_or_else(|| EngineError::Internal("no stage prints the query's rows".into()))?;
        let schema = final_stage.plan.schema();
        let client = Arc::new(ShuffleClient::new(
            cluster.endpoint.clone(),
            None,
            tokio::runtime::Handle::current(),
        ));
        let fetcher = Fetcher(client);
        let mut printer = ConsolePrinter::new(self.config.max_result_rows);
        for (partition, executor, report) in scheduler.reports(final_stage.id) {
            if printer.is_full() {
                printer.count_unfetched(report.output_rows);
                continue;
            }
            let Some(member) = self.members.get(&executor) else {
                return Err(EngineError::ExecutorLost {
                    executor: executor.to_string(),
                    reason: "it held query results".into(),
                });
            };
            let location = MapOutputLocation {
                map_partition: partition,
                executor,
                addr: member.info.data_addr,
                epoch: None,
                reduce_partition: None,
            };
            let request = FetchRequest {
                query_id: self.query_id.clone(),
                epoch,
                stage: final_stage.id,
                map_partition: partition,
                reduce_partition: 0,
            };
            let mut stream = crate::operator::nodes::ShuffleFetch::fetch(
                &fetcher,
                &location,
                request,
                schema.clone(),
            );
            let mut seen = 0u64;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| {
                    EngineError::Cluster(format!("fetching results: {}", describe_datafusion(&e)))
                })?;
                seen += batch.num_rows() as u64;
                printer.push(&batch);
                if printer.is_full() {
                    break; // dropping the stream cancels the transfer
                }
            }
            printer.count_unfetched(report.output_rows.saturating_sub(seen));
        }
        Ok(printer)
    }
}
