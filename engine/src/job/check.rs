//! Whether a job can resume from a checkpoint another version of it wrote, and if not, why:
//! the checkpoint keeps the job's parts (tables, watermarks, queries) as normalised text
//! ([`JobRecord`], its `job` file), and a changed job is compared part by part.

use serde::{Deserialize, Serialize};

use super::Job;

/// What a checkpoint keeps of the job that writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's fingerprint (as in the checkpoint's metadata).
    pub fingerprint: String,
    /// Its parts: `table NAME`, `watermark NAME`, `insert NAME`, `select` → normalised text.
    pub parts: Vec<(String, String)>,
    /// The job's text as given (`sluice checkpoint state` plans it to decode state).
    #[serde(default)]
    pub text: String,
    /// Where the text came from.
    #[serde(default)]
    pub origin: String,
}

impl JobRecord {
    /// The record of `job`.
    pub fn of(job: &Job) -> Self {
        JobRecord {
            fingerprint: job.fingerprint.clone(),
            parts: job.parts.clone(),
            text: job.text.text.clone(),
            origin: job.text.origin.clone(),
        }
    }
}

/// The answer of `sluice checkpoint check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether `sluice run JOB --checkpoint DIR` would resume (rather than be refused).
    pub resumes: bool,
    /// Why, one sentence per reason.
    pub reasons: Vec<String>,
}

/// Compares `job` with the checkpoint's fingerprint and record; `epochs` is whether the
/// checkpoint recorded any epoch (a checkpoint that recorded none is taken over by any job).
pub fn check(fingerprint: &str, record: Option<&JobRecord>, job: &Job, epochs: bool) -> Verdict {
    if fingerprint == job.fingerprint {
        return Verdict {
            resumes: true,
            reasons: vec![format!(
                "the job is the one that wrote this checkpoint (fingerprint {fingerprint}): it resumes where the checkpoint ends"
            )],
        };
    }
    if !epochs {
        return Verdict {
            resumes: true,
            reasons: vec!["the checkpoint recorded no epoch: the changed job takes it over".into()],
        };
    }
    let Some(record) = record else {
        return Verdict {
            resumes: false,
            reasons: vec![format!(
                "the job differs from the one that wrote this checkpoint (fingerprint {fingerprint}, this job {}); the checkpoint was written before Sluice kept job definitions, so what changed cannot be told",
                job.fingerprint
            )],
        };
    };
    let mut reasons = Vec::new();
    let find = |parts: &[(String, String)], key: &str| {
        parts.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    };
    let mut keys: Vec<&String> = record.parts.iter().map(|(k, _)| k).collect();
    for (k, _) in &job.parts {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for key in keys {
        let (old, new) = (find(&record.parts, key), find(&job.parts, key));
        if old == new {
            continue;
        }
        let (kind, name) = key.split_once(' ').unwrap_or((key.as_str(), ""));
        let what = match kind {
            "table" if job.queries.iter().any(|q| q.target == super::Target::Table(name.into())) => {
                format!("table '{name}' (written by the job)")
            }
            "table" => format!(
                "source table '{name}' (the offsets the checkpoint recorded were planned for its old definition)"
            ),
            "watermark" => format!("the watermark of '{name}' (the state's windows were closed by the old one)"),
            "insert" => format!(
                "the query writing '{name}' (its operator state and output came from the old query)"
            ),
            "select" => "the query (its operator state came from the old one)".to_string(),
            _ => format!("statement {key}"),
        };
        let change = match (&old, &new) {
            (Some(_), None) => "was removed",
            (None, Some(_)) => "was added",
            _ => "changed",
        };
        let mut reason = format!("{what} {change}");
        if let (Some(old), Some(new)) = (&old, &new) {
            reason.push_str(&format!(":\n    was: {old}\n    now: {new}"));
        }
        reasons.push(reason);
    }
    if reasons.is_empty() {
        reasons.push(format!(
            "the job's fingerprint differs (checkpoint {fingerprint}, this job {}), though no part did",
            job.fingerprint
        ));
    }
    Verdict {
        resumes: false,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobText;

    fn job(text: &str) -> Job {
        Job::parse(JobText {
            origin: "job.sql".into(),
            text: text.into(),
        })
        .unwrap()
    }

    const SOURCE: &str = "CREATE TABLE bids (auction BIGINT, date_time TIMESTAMP, WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) WITH (connector = 'kafka', bootstrap_servers = 'b:9092', topic = 'bids', format = 'json');\n";
    const SINK: &str = "CREATE TABLE counts WITH (connector = 'parquet', path = 'out/');\n";
    const QUERY: &str =
        "INSERT INTO counts SELECT auction, count(*) AS n FROM bids GROUP BY auction;\n";

    #[test]
    fn each_changed_part_is_named() {
        let old = job(&format!("{SOURCE}{SINK}{QUERY}"));
        let record = JobRecord::of(&old);
        // The same job (whitespace and SET statements aside) resumes.
        let same = job(&format!("SET trigger = '1s';\n{SOURCE}{SINK}\n\n{QUERY}"));
        assert!(check(&old.fingerprint, Some(&record), &same, true).resumes);
        // A changed query names its table and the state it built.
        let changed = job(&format!(
            "{SOURCE}{SINK}INSERT INTO counts SELECT auction, max(auction) AS n FROM bids GROUP BY auction;\n"
        ));
        let v = check(&old.fingerprint, Some(&record), &changed, true);
        assert!(!v.resumes);
        assert_eq!(v.reasons.len(), 1, "{v:?}");
        assert!(
            v.reasons[0].starts_with("the query writing 'counts'"),
            "{v:?}"
        );
        assert!(v.reasons[0].contains("max(auction)"), "{v:?}");
        // A changed source and watermark are named as such.
        let source = job(&format!(
            "{}{SINK}{QUERY}",
            SOURCE
                .replace("topic = 'bids'", "topic = 'bids2'")
                .replace("'4' SECOND", "'9' SECOND")
        ));
        let v = check(&old.fingerprint, Some(&record), &source, true);
        assert!(!v.resumes);
        assert!(
            v.reasons
                .iter()
                .any(|r| r.starts_with("source table 'bids'")),
            "{v:?}"
        );
        assert!(
            v.reasons
                .iter()
                .any(|r| r.starts_with("the watermark of 'bids'")),
            "{v:?}"
        );
        // A second INSERT is an added query.
        let more = job(&format!(
            "{SOURCE}{SINK}CREATE TABLE raw WITH (connector = 'parquet', path = 'raw/');\n{QUERY}INSERT INTO raw SELECT * FROM bids;\n"
        ));
        let v = check(&old.fingerprint, Some(&record), &more, true);
        assert!(
            v.reasons
                .iter()
                .any(|r| r == "table 'raw' (written by the job) was added"),
            "{v:?}"
        );
        assert!(
            v.reasons
                .iter()
                .any(|r| r.starts_with("the query writing 'raw'") && r.ends_with("was added")),
            "{v:?}"
        );
        // Without epochs any job takes over; without a record only the fingerprint is known.
        assert!(check(&old.fingerprint, Some(&record), &changed, false).resumes);
        let v = check(&old.fingerprint, None, &changed, true);
        assert!(
            !v.resumes && v.reasons[0].contains("cannot be told"),
            "{v:?}"
        );
    }
}
