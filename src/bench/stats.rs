//! Latency and throughput summaries for `aiserve bench`.

use serde::Serialize;

/// One concurrency level's result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LevelReport {
    pub concurrency: usize,
    pub seconds: f64,
    pub requests: usize,
    pub ok: usize,
    pub errors: usize,
    /// Successful responses per second.
    pub throughput: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Non-2xx statuses and transport errors, with counts.
    pub failures: Vec<(String, usize)>,
}

/// Nearest-rank percentile of sorted samples (`q` in 0..=100); 0 when empty.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarises latencies (µs, of successful requests) and failure labels.
pub fn summarise(concurrency: usize, seconds: f64, mut latencies_us: Vec<u64>, failures: Vec<String>) -> LevelReport {
    latencies_us.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    let mut counted: Vec<(String, usize)> = Vec::new();
    for f in failures.iter() {
        match counted.iter_mut().find(|(k, _)| k == f) {
            Some((_, n)) => *n += 1,
            None => counted.push((f.clone(), 1)),
        }
    }
    let ok = latencies_us.len();
    LevelReport {
        concurrency,
        seconds,
        requests: ok + failures.len(),
        ok,
        errors: failures.len(),
        throughput: if seconds > 0.0 { ok as f64 / seconds } else { 0.0 },
        p50_ms: ms(percentile(&latencies_us, 50.0)),
        p90_ms: ms(percentile(&latencies_us, 90.0)),
        p99_ms: ms(percentile(&latencies_us, 99.0)),
        max_ms: ms(latencies_us.last().copied().unwrap_or(0)),
        failures: counted,
    }
}

pub fn table_header() -> &'static str {
    "| concurrency | req/s | p50 ms | p90 ms | p99 ms | max ms | ok | errors |\n|---|---|---|---|---|---|---|---|"
}

pub fn table_row(r: &LevelReport) -> String {
    format!(
        "| {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {}{} |",
        r.concurrency,
        r.throughput,
        r.p50_ms,
        r.p90_ms,
        r.p99_ms,
        r.max_ms,
        r.ok,
        r.errors,
        if r.failures.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.failures.iter().map(|(k, n)| format!("{k}: {n}")).collect::<Vec<_>>().join(", "))
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!((percentile(&v, 50.0), percentile(&v, 90.0), percentile(&v, 99.0)), (50, 90, 99));
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn summary_counts_failures_by_kind() {
        let r = summarise(4, 2.0, vec![3000, 1000, 2000], vec!["503".into(), "503".into(), "connect".into()]);
        assert_eq!((r.ok, r.errors, r.requests), (3, 3, 6));
        assert_eq!(r.throughput, 1.5);
        assert_eq!(r.p50_ms, 2.0);
        assert_eq!(r.failures, [("503".to_string(), 2), ("connect".to_string(), 1)]);
        assert!(table_row(&r).contains("503: 2"));
    }
}
