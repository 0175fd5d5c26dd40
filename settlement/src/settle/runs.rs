//! The registry of settlement runs started over HTTP
//! (`GET /v1/settlement/runs/{id}`), in memory.

use super::RunSummary;
use std::collections::BTreeMap;

/// Runs started over HTTP that a registry keeps (the most recent ones).
pub const MAX_RUNS_KEPT: usize = 100;

/// A settlement run started over HTTP (`GET /v1/settlement/runs/{id}`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RunStatus {
    /// Run id (per service process, from 1).
    pub run_id: u64,
    /// `running`, `done` or `failed`.
    pub status: &'static str,
    /// Server time at the start.
    pub started_unix_s: u64,
    /// Server time at the end.
    pub finished_unix_s: Option<u64>,
    /// What the run did, once done.
    pub summary: Option<RunSummary>,
    /// Why it failed (chunks committed before the failure stay committed;
    /// a new run resumes).
    pub error: Option<String>,
}

/// The service's runs by id (in memory: a restarted service forgets them;
/// their effects are in the database).
#[derive(Debug, Default)]
pub struct RunRegistry {
    next_id: u64,
    runs: BTreeMap<u64, RunStatus>,
}

impl RunRegistry {
    /// Registers a running run; returns its id.
    pub fn start(&mut self, now_unix_s: u64) -> u64 {
        self.next_id += 1;
        let run_id = self.next_id;
        self.runs.insert(
            run_id,
            RunStatus {
                run_id,
                status: "running",
                started_unix_s: now_unix_s,
                finished_unix_s: None,
                summary: None,
                error: None,
            },
        );
        while self.runs.len() > MAX_RUNS_KEPT {
            self.runs.pop_first();
        }
        run_id
    }
    /// Records a run's end.
    pub fn finish(&mut self, run_id: u64, result: Result<RunSummary, String>, now_unix_s: u64) {
        if let Some(r) = self.runs.get_mut(&run_id) {
            r.finished_unix_s = Some(now_unix_s);
            match result {
                Ok(s) => {
                    r.status = "done";
                    r.summary = Some(s);
                }
                Err(e) => {
                    r.status = "failed";
                    r.error = Some(e);
                }
            }
        }
    }
    /// Every kept run, newest first (the dashboard's history).
    pub fn list(&self) -> Vec<RunStatus> {
        self.runs.values().rev().cloned().collect()
    }
    /// A run's status.
    pub fn get(&self, run_id: u64) -> Option<RunStatus> {
        self.runs.get(&run_id).cloned()
    }
}
