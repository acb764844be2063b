//! CPU accounting from /proc: who used the cores during a phase (the server, the load
//! generator, everything else), so a noisy neighbour shows up in the report instead of in the
//! numbers.

use std::time::Instant;

/// Linux reports process and system times in USER_HZ ticks, 100 per second on every
/// mainstream architecture.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    at: Instant,
    busy_ticks: u64,
    own_ticks: u64,
    /// Children this process waited for (wrk).
    children_ticks: u64,
    server_ticks: Option<u64>,
    writer_ticks: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Usage {
    /// Cores used on average during the phase.
    pub server_cores: Option<f64>,
    pub loadgen_cores: f64,
    /// The server's `store-writer` thread alone.
    pub writer_cores: Option<f64>,
    pub other_cores: f64,
    pub seconds: f64,
}

impl Usage {
    pub fn server_seconds(&self) -> Option<f64> {
        self.server_cores.map(|c| c * self.seconds)
    }

    pub fn loadgen_seconds(&self) -> f64 {
        self.loadgen_cores * self.seconds
    }
}

pub fn sample(server_pid: Option<u32>) -> Sample {
    Sample {
        at: Instant::now(),
        busy_ticks: system_busy_ticks().unwrap_or(0),
        own_ticks: process_ticks("self").unwrap_or(0),
        children_ticks: children_ticks().unwrap_or(0),
        server_ticks: server_pid.and_then(|pid| process_ticks(&pid.to_string())),
        writer_ticks: server_pid.and_then(writer_ticks),
    }
}

pub fn between(start: &Sample, end: &Sample) -> Usage {
    let seconds = end.at.duration_since(start.at).as_secs_f64().max(1e-9);
    let cores = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / seconds;
    let own = end.own_ticks.saturating_sub(start.own_ticks)
        + end.children_ticks.saturating_sub(start.children_ticks);
    let server = match (start.server_ticks, end.server_ticks) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let busy = end.busy_ticks.saturating_sub(start.busy_ticks);
    let other = busy.saturating_sub(own + server.unwrap_or(0));
    Usage {
        server_cores: server.map(cores),
        writer_cores: match (start.writer_ticks, end.writer_ticks) {
            (Some(a), Some(b)) => Some(cores(b.saturating_sub(a))),
            _ => None,
        },
        loadgen_cores: cores(own),
        other_cores: cores(other),
        seconds,
    }
}

/// utime + stime of a process (fields 14 and 15 of /proc/<pid>/stat); `pid` may also be
/// `self/task/<tid>` for one thread.
pub fn process_ticks(pid: &str) -> Option<u64> {
    stat_ticks(pid, 11)
}

/// cutime + cstime of this process (fields 16 and 17): children it has waited for.
fn children_ticks() -> Option<u64> {
    stat_ticks("self", 13)
}

/// The sum of two adjacent tick fields of /proc/<pid>/stat, counted from the field after the
/// command name (which may contain spaces, so fields start after its closing parenthesis).
fn stat_ticks(pid: &str, first: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(first);
    let a: u64 = fields.next()?.parse().ok()?;
    let b: u64 = fields.next()?.parse().ok()?;
    Some(a + b)
}

/// CPU ticks of the server's `store-writer` thread.
fn writer_ticks(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for task in tasks.flatten() {
        let tid = task.file_name();
        let tid = tid.to_string_lossy();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
        if comm.trim() == "store-writer" {
            return process_ticks(&format!("{pid}/task/{tid}"));
        }
    }
    None
}

/// All cores' non-idle time from the first line of /proc/stat.
fn system_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).unwrap_or(&0);
    Some(total - idle)
}
